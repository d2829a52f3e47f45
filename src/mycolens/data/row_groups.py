"""The row groups of a split, each file's Parquet footer opened up front so a missing or broken shard fails first."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mycolens.data import storage
from mycolens.data.shards import ShardsError, split_files


@dataclass(frozen=True)
class RowGroup:
    """One Parquet row group: the unit a stream reads, shuffles and hands to a process."""

    file: str  # local path or URL
    index: int
    rows: int


def split_shard_paths(shards_dir: str | Path, split: str, manifest: dict[str, Any] | None) -> list[str]:
    """The files of a split: those the manifest lists (so a deleted one is noticed), else those in the folder."""
    listed = sorted(rel for rel in (manifest or {}).get("files", {}) if rel.startswith(f"{split}/"))
    if listed:
        return [storage.join(shards_dir, *rel.split("/")) for rel in listed]
    return split_files(shards_dir, split)


def scan_split(shards_dir: str | Path, split: str, manifest: dict[str, Any] | None = None) -> list[RowGroup]:
    """Every row group of a split in file order; a ShardsError naming the first file that is missing or unreadable."""
    groups: list[RowGroup] = []
    for path in split_shard_paths(shards_dir, split, manifest):
        try:
            meta = storage.parquet_footer(path)
        except FileNotFoundError:
            raise ShardsError(
                f"shard {path} is missing: restore it (`dvc pull` / `dvc checkout`) or regenerate the data "
                "(`python scripts/data.py`)"
            ) from None
        except Exception as exc:  # pyarrow raises ArrowInvalid/OSError for a truncated or foreign file
            raise ShardsError(
                f"shard {path} is unreadable ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}): restore it "
                "(`dvc checkout`) or regenerate the data (`python scripts/data.py`)"
            ) from None
        groups += [RowGroup(path, i, meta.row_group(i).num_rows) for i in range(meta.num_row_groups)]
    return groups


def decoded_bytes(rows: int, image_size: int) -> int:
    """Bytes of `rows` decoded uint8 RGB images at `image_size` px (what the in-memory path holds)."""
    return int(rows) * 3 * int(image_size) ** 2
