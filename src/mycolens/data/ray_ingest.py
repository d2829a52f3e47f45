"""`data.engine=ray`: the ingest's read/verify/re-encode step as a Ray Data pipeline; the same shards byte for byte."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa

from mycolens.catalogue import Catalogue
from mycolens.data.ingest import IngestReport, IngestSettings, run_ingest, serial_map
from mycolens.utils.ray_session import ray_session

RESULT_SCHEMA = pa.schema(
    [
        ("i", pa.int64()),
        ("sha256", pa.string()),
        ("code", pa.string()),
        ("message", pa.string()),
        ("image", pa.binary()),
    ]
)


def ingest_folder_ray(
    source: str | Path,
    out_dir: str | Path,
    catalogue: Catalogue,
    *,
    workers: int,
    num_cpus: int = 2,
    object_store_memory: int = 200 * 2**20,
    **options: Any,
) -> IngestReport:
    """`ingest_folder` with the file step on Ray Data (`workers` concurrent tasks); starts a local Ray if needed.

    `options` are IngestSettings' fields; `num_cpus` and `object_store_memory` size a Ray this call starts.
    """
    settings = IngestSettings(source, out_dir, **options)
    with ray_session({"num_cpus": num_cpus, "object_store_memory": object_store_memory}):
        return run_ingest(
            settings,
            catalogue,
            map_files=partial(ray_map_files, concurrency=max(1, int(workers))),
            map_images=serial_map,
        )


def ray_map_files(
    fn: Callable[[tuple[str, bool]], dict[str, Any]], items: list[tuple[str, bool]], desc: str, *, concurrency: int
) -> list[dict[str, Any]]:
    """Run `fn` over (path, decode) items in Ray Data tasks; results in input order."""
    import ray.data

    if not items:
        return []
    rows = [{"i": i, "path": path, "decode": decode} for i, (path, decode) in enumerate(items)]
    ds = ray.data.from_items(rows, override_num_blocks=min(len(rows), 4 * concurrency))
    ds = ds.map_batches(
        partial(_verify_batch, fn=fn),
        batch_format="pyarrow",
        batch_size=16,
        num_cpus=1,
        compute=ray.data.TaskPoolStrategy(size=concurrency),
    )
    out = sorted(ds.take_all(), key=lambda r: r["i"])
    return [{k: r[k] for k in ("sha256", "code", "message", "image")} for r in out]


def _verify_batch(batch: pa.Table, fn: Callable[[tuple[str, bool]], dict[str, Any]]) -> pa.Table:
    """One Ray Data batch: the same per-file function as the local process pool."""
    items = zip(batch.column("path").to_pylist(), batch.column("decode").to_pylist(), strict=True)
    results = [fn(item) for item in items]
    cols = {"i": batch.column("i").to_pylist()} | {k: [r[k] for r in results] for k in RESULT_SCHEMA.names[1:]}
    return pa.table(cols, schema=RESULT_SCHEMA)
