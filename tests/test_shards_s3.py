"""Shards on object storage: paths.shards_dir=s3://... read through fsspec (s3fs) with a bounded local cache, and
versioned with DVC (import-url; a cloud-versioned remote).

The S3 endpoint here is an EMULATOR: moto's standalone server (`moto[server]`), started by the test on 127.0.0.1 on
a free port and stopped by its pid. It speaks the S3 HTTP API well enough for s3fs; it is not AWS, and says nothing
about a real store's latency, throughput or consistency.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from mycolens.data import storage
from mycolens.data.shards import ShardsError, read_manifest, read_split
from mycolens.training.run import build_datamodule

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3 emulator on 127.0.0.1 (a free port), with dummy credentials in the environment; stopped by pid."""
    import s3fs

    port = free_port()
    log = (tmp_path_factory.mktemp("moto") / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    env = {
        storage.CACHE_DIR_ENV: str(tmp_path_factory.mktemp("shard-cache")),  # never the shared default in /tmp
        "AWS_ENDPOINT_URL": url,
        "AWS_ACCESS_KEY_ID": "emulator",
        "AWS_SECRET_ACCESS_KEY": "emulator",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto server did not start: see {log.name}") from None
                time.sleep(0.2)
        s3fs.S3FileSystem.clear_instance_cache()
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture(scope="module")
def s3_shards(s3_endpoint: str, tiny_shards: Path) -> str:
    """The tiny shards uploaded to s3://mycolens-test/shards."""
    import fsspec

    fs, _ = fsspec.core.url_to_fs("s3://mycolens-test")
    fs.mkdir("mycolens-test")
    fs.put(str(tiny_shards) + "/", "mycolens-test/shards/", recursive=True)
    return "s3://mycolens-test/shards"


def test_s3_shards_stream_through_a_bounded_cache(s3_shards, tiny_shards, make_cfg, tmp_path, monkeypatch):
    assert read_manifest(s3_shards) == read_manifest(tiny_shards)
    for name in (storage.CACHE_DIR_ENV, storage.CACHE_GB_ENV):  # restored after the test
        monkeypatch.setenv(name, os.environ.get(name, ""))
    cache = tmp_path / "cache"
    cfg = make_cfg(
        f"paths.shards_dir={s3_shards}",
        "data.cache_max_gb=0",
        "data.loader.num_workers=2",
        f"data.stream.remote_cache_dir={cache}",
        "data.stream.remote_cache_gb=1e-9",  # below one file: every file read is evicted by the next
    )
    dm = build_datamodule(cfg)
    dm.setup("fit")
    labels = Counter(int(y) for _, batch in dm.train_dataloader() for y in batch)
    local = Counter(read_split(tiny_shards, "train", ["label"]).column("label").to_pylist())
    local[-1] = int(cfg.data.outliers.images)
    assert labels == local
    cached = list(cache.rglob("*.parquet"))
    assert len(cached) <= 1  # bounded: only the file read last is kept


def test_in_memory_path_reads_s3_too(s3_shards, tiny_shards, make_cfg):
    dm = build_datamodule(make_cfg(f"paths.shards_dir={s3_shards}"))
    dm.setup("test")
    assert not dm.streaming
    assert torch.equal(
        dm.splits["test"].labels, torch.tensor(read_split(tiny_shards, "test", ["label"])["label"].to_pylist())
    )


def test_a_missing_s3_shard_is_named(s3_shards, make_cfg):
    import fsspec

    fs, _ = fsspec.core.url_to_fs(s3_shards)
    fs.copy(f"{s3_shards}/val", "mycolens-test/broken/val", recursive=True)
    fs.copy(f"{s3_shards}/train", "mycolens-test/broken/train", recursive=True)
    fs.copy(f"{s3_shards}/manifest.json", "mycolens-test/broken/manifest.json")
    dm = build_datamodule(make_cfg("paths.shards_dir=s3://mycolens-test/broken"))
    with pytest.raises(ShardsError, match=r"^shard s3://mycolens-test/broken/test/part-00000.parquet is missing"):
        dm.setup("fit")


DVC = str(Path(sys.executable).with_name("dvc"))


def git_dvc_repo(repo: Path) -> Callable[..., str]:
    """`git init` + `dvc init` in `repo`; returns a runner of commands there that asserts each one succeeds."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_TERMINAL_PROMPT": "0"}

    def sh(*cmd: str) -> str:
        done = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{' '.join(cmd)}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
        return done.stdout

    sh("git", "init", "-q")
    sh("git", "config", "user.email", "ci@example.invalid")
    sh("git", "config", "user.name", "ci")
    sh(DVC, "init", "-q")
    return sh


def test_dvc_import_url_versions_shards_that_live_in_the_bucket(s3_endpoint, tiny_shards, tmp_path):
    """`dvc import-url` (dvc-s3) records a bucket's shards and their checksums in data/shards.dvc and leaves a copy
    training reads; a file rewritten in the bucket comes in with `dvc update` as a new version to commit, and the
    old .dvc file checks the old files out again from DVC's cache. (The bucket is moto's emulator.)"""
    import fsspec

    fs, _ = fsspec.core.url_to_fs("s3://mycolens-dvc")
    fs.mkdir("mycolens-dvc")
    fs.put(str(tiny_shards) + "/", "mycolens-dvc/shards/v1/", recursive=True)
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    sh = git_dvc_repo(repo)
    sh(DVC, "import-url", "s3://mycolens-dvc/shards/v1", "data/shards")
    shards = repo / "data" / "shards"
    assert read_manifest(shards) == read_manifest(tiny_shards)
    assert read_split(shards, "train").equals(read_split(tiny_shards, "train"))
    assert "s3://mycolens-dvc/shards/v1" in (repo / "data" / "shards.dvc").read_text()
    sh("git", "add", "-A")
    sh("git", "commit", "-qm", "shards v1")

    manifest = json.loads(fs.cat("mycolens-dvc/shards/v1/manifest.json"))
    fs.pipe("mycolens-dvc/shards/v1/manifest.json", json.dumps({**manifest, "note": "relabelled"}).encode())
    sh(DVC, "update", "data/shards.dvc")
    assert read_manifest(shards)["note"] == "relabelled"
    assert "data/shards.dvc" in sh("git", "status", "--porcelain")  # a new version to commit

    sh("git", "checkout", "--", "data/shards.dvc")
    sh(DVC, "checkout", "--force")
    assert read_manifest(shards) == read_manifest(tiny_shards)


def test_cloud_versioned_remote_pushes_a_shards_folder_training_reads(s3_endpoint, tiny_shards, tmp_path):
    """A cloud-versioned DVC remote (`version_aware` + `worktree`, on a bucket with versioning on): `dvc push` writes
    data/shards under its own path, a folder `paths.shards_dir` reads; a changed file pushed again is the bucket's
    current version, and the old .dvc file pulls the old version back by its version id into an empty cache."""
    import shutil

    import fsspec

    fs, _ = fsspec.core.url_to_fs("s3://mycolens-versioned")
    fs.mkdir("mycolens-versioned")
    fs.make_bucket_versioned("mycolens-versioned", True)
    repo = tmp_path / "repo"
    shutil.copytree(tiny_shards, repo / "data" / "shards")
    sh = git_dvc_repo(repo)
    sh(DVC, "remote", "add", "-d", "bucket", "s3://mycolens-versioned/project")
    sh(DVC, "remote", "modify", "bucket", "version_aware", "true")
    sh(DVC, "remote", "modify", "bucket", "worktree", "true")
    sh(DVC, "remote", "modify", "bucket", "endpointurl", s3_endpoint)
    sh(DVC, "add", "data/shards")
    sh(DVC, "push")
    pushed = "s3://mycolens-versioned/project/data/shards"
    assert read_manifest(pushed) == read_manifest(tiny_shards)  # the workspace's paths: training reads them as is
    assert read_split(pushed, "val").equals(read_split(tiny_shards, "val"))
    assert "version_id" in (repo / "data" / "shards.dvc").read_text()
    sh("git", "add", "-A")
    sh("git", "commit", "-qm", "shards v1")

    manifest_path = repo / "data" / "shards" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({**manifest, "note": "relabelled"}))
    sh(DVC, "add", "data/shards")
    sh(DVC, "push")
    assert read_manifest(pushed)["note"] == "relabelled"  # the bucket's current version

    sh("git", "checkout", "--", "data/shards.dvc")
    shutil.rmtree(repo / "data" / "shards")
    shutil.rmtree(repo / ".dvc" / "cache")
    sh(DVC, "pull")  # from the bucket's old object versions, by the version ids in the old .dvc file
    assert read_manifest(repo / "data" / "shards") == read_manifest(tiny_shards)
