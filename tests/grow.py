"""Shards of any size from small ones: the train split's rows repeated to `rows` (for memory and speed tests)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from mycolens.data.shards import read_split


def grown_shards(src: Path, out: Path, rows: int, rows_per_file: int = 2000) -> Path:
    """A copy of `src` whose train split holds `rows` rows (its own rows, repeated), as Parquet files of row groups."""
    shutil.copytree(src, out)
    table = read_split(src, "train")
    table = pa.concat_tables([table] * (-(-rows // table.num_rows))).slice(0, rows)
    for f in (out / "train").glob("*.parquet"):
        f.unlink()
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["files"] = {k: v for k, v in manifest["files"].items() if not k.startswith("train/")}
    for part, start in enumerate(range(0, rows, rows_per_file)):
        rel = f"train/part-{part:05d}.parquet"
        pq.write_table(table.slice(start, rows_per_file), out / rel, compression="zstd", row_group_size=512)
        manifest["files"][rel] = ""
    manifest["splits"]["train"]["images"] = rows
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return out
