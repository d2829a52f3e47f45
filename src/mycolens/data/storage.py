"""Where shards live: a local folder or an fsspec URL (s3://...), and a bounded local cache of remote shard files."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

# remote shard files are copied here on first read and evicted oldest-read first past the budget
CACHE_DIR_ENV = "MYCOLENS_SHARD_CACHE"
CACHE_GB_ENV = "MYCOLENS_SHARD_CACHE_GB"
DEFAULT_CACHE_GB = 4.0


def is_remote(location: str | Path) -> bool:
    """True for an fsspec URL with a non-local protocol (s3://, gs://, ...)."""
    text = str(location)
    return "://" in text and not text.startswith("file://")


def join(location: str | Path, *parts: str) -> str:
    """`location/part/...` for a folder or a URL."""
    return "/".join([str(location).rstrip("/"), *parts]) if is_remote(location) else str(Path(location, *parts))


def filesystem(location: str | Path) -> Any:
    """The fsspec filesystem of a URL (credentials and endpoint from the usual environment, e.g. AWS_ENDPOINT_URL)."""
    import fsspec

    fs, _ = fsspec.core.url_to_fs(str(location))
    return fs


def exists(location: str | Path) -> bool:
    return filesystem(location).exists(str(location)) if is_remote(location) else Path(location).exists()


def read_bytes(location: str | Path) -> bytes:
    return filesystem(location).cat_file(str(location)) if is_remote(location) else Path(location).read_bytes()


def list_files(folder: str | Path, pattern: str) -> list[str]:
    """Sorted paths (or URLs) of the files in `folder` matching a glob `pattern`."""
    if not is_remote(folder):
        return [str(p) for p in sorted(Path(folder).glob(pattern))]
    fs = filesystem(folder)
    protocol = str(folder).split("://", 1)[0]
    return sorted(f"{protocol}://{p}" for p in fs.glob(join(folder, pattern)))


def configure_cache(folder: str | Path | None, max_gb: float | None) -> None:
    """Set the remote-shard cache's folder and size bound for this process and the DataLoader workers it starts."""
    if folder:
        os.environ[CACHE_DIR_ENV] = str(folder)
    if max_gb is not None:
        os.environ[CACHE_GB_ENV] = str(float(max_gb))


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_DIR_ENV) or Path(tempfile.gettempdir()) / "mycolens-shard-cache")


def cache_budget_bytes() -> int:
    return int(float(os.environ.get(CACHE_GB_ENV) or DEFAULT_CACHE_GB) * 1e9)


def _evict(folder: Path, budget: int, keep: Path) -> None:
    """Delete the least recently read files until the folder fits `budget` (never `keep`)."""
    files = sorted((p for p in folder.rglob("*.parquet") if p != keep), key=lambda p: p.stat().st_atime)
    total = sum(p.stat().st_size for p in files) + (keep.stat().st_size if keep.exists() else 0)
    for p in files:
        if total <= budget:
            break
        total -= p.stat().st_size
        p.unlink(missing_ok=True)  # an open handle elsewhere keeps reading: POSIX unlinks lazily


def local_copy(url: str) -> Path:
    """A local path holding the remote file `url`: downloaded once (atomically) into the bounded cache."""
    target = cache_dir() / url.replace("://", "/", 1)
    if target.is_file():
        os.utime(target)  # mark as recently read for eviction
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".part-")
    os.close(fd)
    try:
        filesystem(url).get_file(url, tmp)
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
    _evict(cache_dir(), cache_budget_bytes(), target)
    return target


def open_parquet(location: str | Path) -> Any:
    """A pyarrow ParquetFile for a local path, or for a remote URL through the local cache."""
    import pyarrow.parquet as pq

    if not is_remote(location):
        return pq.ParquetFile(location)
    try:
        return pq.ParquetFile(local_copy(str(location)))
    except FileNotFoundError:  # evicted by another worker between download and open: fetch again
        return pq.ParquetFile(local_copy(str(location)))


def parquet_footer(location: str | Path) -> Any:
    """The Parquet metadata of a file (for a remote URL only the footer's bytes are read, nothing is cached)."""
    import pyarrow.parquet as pq

    if not is_remote(location):
        return pq.ParquetFile(location).metadata
    with filesystem(location).open(str(location), "rb") as f:
        return pq.ParquetFile(f).metadata
