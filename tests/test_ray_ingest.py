"""`data.engine=ray`: the Ray Data ingest writes the same shards and manifest, byte for byte, as the local one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mycolens.catalogue import load_catalogue
from mycolens.data.ingest import ingest_folder
from tests.test_ingest import SMALL, A, B, photo, script

pytestmark = pytest.mark.slow
RAY_SMALL = dict(num_cpus=2, object_store_memory=200 * 2**20)


@pytest.fixture
def folder(tmp_path: Path) -> dict[str, Path]:
    src = tmp_path / "photos"
    for i in range(4):
        photo(src / A / f"a{i}.jpg", seed=i)
        photo(src / B / f"b{i}.png", size=(70, 50), seed=10 + i, fmt="PNG")
    photo(src / B / "cmyk.jpg", seed=20, mode="CMYK")
    (src / A / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    (src / A / "copy.jpg").write_bytes((src / A / "a1.jpg").read_bytes())
    photo(tmp_path / "ood" / "thing.jpg", seed=30)
    return {"src": src, "ood": tmp_path / "ood", "tmp": tmp_path}


def ingest_args(out: Path, folder: dict[str, Path], workers: int) -> dict:
    return SMALL | dict(workers=workers, ood_source=folder["ood"], report_path=out.parent / f"{out.name}.report.json")


def same_tree(one: Path, two: Path) -> None:
    files = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file())
    assert Path("manifest.json") in files and Path("ood/part-00000.parquet") in files
    assert files == sorted(p.relative_to(two) for p in two.rglob("*") if p.is_file())
    for rel in files:
        assert (one / rel).read_bytes() == (two / rel).read_bytes(), rel


def test_ray_data_shards_equal_local(folder: dict[str, Path]) -> None:
    import ray

    from mycolens.data.ray_ingest import ingest_folder_ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    cat, tmp = load_catalogue(None), folder["tmp"]
    local = ingest_folder(folder["src"], tmp / "local", cat, **ingest_args(tmp / "local", folder, 1))
    assert not ray.is_initialized()
    remote = ingest_folder_ray(folder["src"], tmp / "ray", cat, **ingest_args(tmp / "ray", folder, 2), **RAY_SMALL)
    assert not ray.is_initialized()  # it shut down the Ray it started
    same_tree(tmp / "local", tmp / "ray")
    assert remote.by_reason() == local.by_reason() == {"duplicate": 1, "truncated": 1}
    assert remote.quarantined == local.quarantined and remote.splits == local.splits

    ray.init(num_cpus=2, object_store_memory=RAY_SMALL["object_store_memory"], include_dashboard=False)
    try:
        ingest_folder_ray(folder["src"], tmp / "ray2", cat, **ingest_args(tmp / "ray2", folder, 1), **RAY_SMALL)
        assert ray.is_initialized()  # a Ray it did not start stays up
    finally:
        ray.shutdown()
    same_tree(tmp / "local", tmp / "ray2")


def test_script_engine_ray(folder: dict[str, Path]) -> None:
    tmp = folder["tmp"]
    overrides = [f"data.ingest.{k}={SMALL[k]}" for k in ("max_side", "min_side", "ood_images")]
    overrides += [f"data.image_size={SMALL['image_size']}", f"data.seed={SMALL['seed']}", "data.workers=2"]
    overrides += [
        f"data.splits={{train:{SMALL['splits']['train']},val:{SMALL['splits']['val']},test:{SMALL['splits']['test']}}}"
    ]
    overrides += [f"data.ingest.ood_source={folder['ood']}"]
    proc = script(f"source={folder['src']}", f"paths.data_dir={tmp / 'data'}", "data.engine=ray", *overrides, cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "quarantined 2 (duplicate 1, truncated 1)" in proc.stdout
    local = tmp / "local"
    ingest_folder(folder["src"], local, load_catalogue(None), **ingest_args(local, folder, 1))
    same_tree(local, tmp / "data" / "shards")
