"""Parquet shards (encoded image bytes + labels) and manifest.json: the one data format every stage reads."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mycolens.catalogue import Catalogue
from mycolens.data import storage
from mycolens.utils.io import atomic_dir, sha256_file

SPLITS = ("train", "val", "test", "ood")
SCHEMA = pa.schema(
    [
        ("image", pa.binary()),  # encoded JPEG/PNG/WebP bytes
        ("label", pa.int32()),  # class index in catalogue order; -1 for ood
        ("species", pa.string()),  # catalogue id; "" for ood
        ("specimen", pa.string()),  # observation id: all photos of one find share it and one split
        ("sha256", pa.string()),  # of the image bytes
        ("source", pa.string()),  # file path relative to the ingest root, or "synthetic"
    ]
)


class ShardsError(FileNotFoundError):
    """Shards missing or inconsistent; the message says which command makes them."""


def grouped_split(
    specimens: Sequence[str], labels: Sequence[int], fractions: dict[str, float], seed: int
) -> dict[str, str]:
    """Assign each specimen to a split, stratified by label; a specimen never spans two splits."""
    rng = np.random.default_rng(seed)
    by_label: dict[int, list[str]] = {}
    for spec, lab in sorted(set(zip(specimens, labels, strict=False))):
        by_label.setdefault(int(lab), []).append(spec)
    names = list(fractions)
    total = sum(fractions.values())
    out: dict[str, str] = {}
    for lab in sorted(by_label):
        specs = sorted(set(by_label[lab]))
        rng.shuffle(specs)
        n = len(specs)
        counts = [int(round(n * fractions[s] / total)) for s in names]
        # every split gets at least one specimen when there are enough of them; the first split absorbs rounding
        for i in range(1, len(names)):
            if n >= len(names) and counts[i] == 0:
                counts[i] = 1
        counts[0] = n - sum(counts[1:])
        start = 0
        for split, c in zip(names, counts, strict=False):
            for spec in specs[start : start + c]:
                out[spec] = split
            start += c
    return out


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_shards(
    out_dir: str | Path,
    rows_by_split: dict[str, list[dict[str, Any]]],
    catalogue: Catalogue,
    *,
    params: dict[str, Any],
    mean_std: tuple[list[float], list[float]],
    rows_per_file: int = 2000,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write split/part-NNNNN.parquet files and manifest.json into `out_dir`, atomically as one folder."""
    out_dir = Path(out_dir)
    manifest: dict[str, Any] = {
        "format": "mycolens-shards/1",
        "catalogue": catalogue.to_dict(),
        "classes": catalogue.ids,
        "params": params,
        "mean": [round(float(m), 6) for m in mean_std[0]],
        "std": [round(float(s), 6) for s in mean_std[1]],
        "splits": {},
        "files": {},
        **(extra or {}),
    }
    with atomic_dir(out_dir) as tmp:
        for split in SPLITS:
            rows = rows_by_split.get(split, [])
            # stable order: by specimen then content hash, so the same input gives the same bytes
            rows = sorted(rows, key=lambda r: (r["specimen"], r["sha256"]))
            (tmp / split).mkdir()
            counts: dict[str, int] = {}
            for r in rows:
                counts[r["species"] or "ood"] = counts.get(r["species"] or "ood", 0) + 1
            for part, start in enumerate(range(0, max(len(rows), 1), rows_per_file)):
                chunk = rows[start : start + rows_per_file]
                table = pa.Table.from_pylist([{k: r[k] for k in SCHEMA.names} for r in chunk], schema=SCHEMA)
                rel = f"{split}/part-{part:05d}.parquet"
                pq.write_table(table, tmp / rel, compression="zstd", row_group_size=512)
                manifest["files"][rel] = sha256_file(tmp / rel)
            manifest["splits"][split] = {
                "images": len(rows),
                "specimens": len({r["specimen"] for r in rows}),
                "per_class": dict(sorted(counts.items())),
            }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return out_dir / "manifest.json"


def read_manifest(shards_dir: str | Path) -> dict[str, Any]:
    """The manifest of a shards folder, or a ShardsError saying how to make one."""
    path = storage.join(shards_dir, "manifest.json")
    if not storage.exists(path):
        raise ShardsError(f"no shards at {shards_dir} (manifest.json missing): run `python scripts/data.py` first")
    return json.loads(storage.read_bytes(path))


def read_split(shards_dir: str | Path, split: str, columns: Iterable[str] | None = None) -> pa.Table:
    """All rows of one split as a pyarrow Table."""
    files = split_files(shards_dir, split)
    tables = [storage.open_parquet(f).read(columns=list(columns) if columns else None) for f in files]
    return pa.concat_tables(tables)


def split_files(shards_dir: str | Path, split: str) -> list[str]:
    """The Parquet files of a split (local paths or URLs), sorted; a ShardsError when there are none."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    folder = storage.join(shards_dir, split)
    files = storage.list_files(folder, "part-*.parquet")
    if not files:
        raise ShardsError(f"no {split} shards in {folder}: run `python scripts/data.py` first")
    return files


def check_catalogue(manifest: dict[str, Any], catalogue: Catalogue) -> None:
    """Refuse shards made with another class order: a poisonous class must never swap names with an edible one."""
    if manifest.get("classes") != catalogue.ids:
        raise ShardsError(
            "the shards' class order differs from the catalogue's: "
            f"shards {manifest.get('classes')} vs catalogue {catalogue.ids}; regenerate the data with this catalogue"
        )


def channel_mean_std(images_hwc: Iterable[np.ndarray]) -> tuple[list[float], list[float]]:
    """Per-channel mean and std (in [0, 1] units) over uint8 HWC images."""
    s = np.zeros(3)
    s2 = np.zeros(3)
    n = 0
    for img in images_hwc:
        x = img.reshape(-1, 3).astype(np.float64) / 255.0
        s += x.sum(0)
        s2 += (x * x).sum(0)
        n += x.shape[0]
    if n == 0:
        return [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]
    mean = s / n
    std = np.sqrt(np.maximum(s2 / n - mean * mean, 1e-12))
    return mean.tolist(), std.tolist()
