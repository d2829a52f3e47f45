"""Streaming input: disjoint parts per (rank, worker), seeded order, the in-memory/streaming choice, broken shards."""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from mycolens.data import streaming
from mycolens.data.datamodule import ShardDataModule
from mycolens.data.row_groups import scan_split
from mycolens.data.shards import ShardsError, read_split
from mycolens.data.streaming import StreamingImages, worker_range
from mycolens.training.run import build_datamodule, train
from tests.conftest import make_shards, run_overrides, run_script


@pytest.fixture(scope="module")
def small_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny 32-px shards cut into files of 10 rows, so a split has several row groups."""
    out = tmp_path_factory.mktemp("stream") / "shards"
    return make_shards(out, specimens_per_class=6, photos_per_specimen=2, ood_images=4, seed=11, rows_per_file=10)


def digest(blob: bytes) -> torch.Tensor:
    """Stands in for decoding: a row's identity, so tests see which rows each process got."""
    return torch.tensor(int.from_bytes(hashlib.sha256(blob).digest()[:7], "big"))


def rows_seen(ds: StreamingImages, monkeypatch: pytest.MonkeyPatch, worker: int, workers: int) -> list[int]:
    monkeypatch.setattr(streaming, "get_worker_info", lambda: SimpleNamespace(id=worker, num_workers=workers))
    ds.decode = digest  # type: ignore[method-assign]
    return [int(x) for x, _ in ds]


def dataset(shards: Path, shuffle: bool, batch_size: int = 8) -> StreamingImages:
    return StreamingImages(
        scan_split(shards, "train"), lambda x: x, batch_size=batch_size, shuffle=shuffle, seed=3, shuffle_buffer=16
    )


@pytest.mark.parametrize("shuffle", [True, False])
def test_ranks_and_workers_read_disjoint_parts_that_cover_the_split(small_files, monkeypatch, shuffle):
    everything = {int(digest(b)) for b in read_split(small_files, "train", ["image"]).column("image").to_pylist()}
    ds = dataset(small_files, shuffle)
    assert len(ds.groups) > 4
    parts = []
    for rank in range(2):
        ds.set_partition(rank, 2)
        ds.set_epoch(1)
        parts += [rows_seen(ds, monkeypatch, w, 3) for w in range(3)]
    seen = [r for p in parts for r in p]
    assert len(seen) % 2 == 0  # equal shares: DDP ranks step in lockstep
    if shuffle:  # training: no row twice, the remainder dropped
        assert len(seen) == len(set(seen)) and set(seen) <= everything
        assert len(everything) - len(seen) == len(everything) % 2
    else:  # evaluation: every row, the last rank padded with the first ones (as DistributedSampler pads)
        assert set(seen) == everything and len(seen) - len(everything) == len(everything) % 2


def test_the_order_comes_from_seed_and_epoch(small_files, monkeypatch):
    ds = dataset(small_files, shuffle=True)
    ds.set_epoch(0)
    first = rows_seen(ds, monkeypatch, 0, 1)
    assert rows_seen(ds, monkeypatch, 0, 1) == first  # the same epoch again: the same order
    ds.set_epoch(1)
    second = rows_seen(ds, monkeypatch, 0, 1)
    assert second != first and sorted(second) == sorted(first)


def test_workers_hand_out_whole_batches():
    assert [worker_range(50, 8, w, 3) for w in range(3)] == [(0, 16), (16, 32), (32, 50)]
    assert worker_range(5, 8, 1, 2) == (0, 5) and worker_range(5, 8, 0, 2) == (0, 0)


def test_cache_budget_decides_and_logs_once(make_cfg, caplog):
    caplog.set_level(logging.INFO, logger="mycolens.data.input_mode")
    dm = build_datamodule(make_cfg())
    dm.setup("fit")
    dm.setup("test")
    lines = [r.getMessage() for r in caplog.records if "data input" in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith("data input: in memory (decoded 0.")
    assert not dm.streaming
    streamed = build_datamodule(make_cfg("data.cache_max_gb=0"))
    streamed.setup("fit")
    assert streamed.streaming and isinstance(streamed.splits["train"], StreamingImages)
    assert "streaming from the shards" in caplog.records[-1].getMessage()


def test_streamed_and_in_memory_evaluation_see_the_same_images(make_cfg):
    memory, streamed = build_datamodule(make_cfg()), build_datamodule(make_cfg("data.cache_max_gb=0"))
    for split in ("val", "test"):
        a = [torch.cat(t) for t in zip(*memory.eval_loader(split), strict=True)]
        b = [torch.cat(t) for t in zip(*streamed.eval_loader(split), strict=True)]
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    # what a Trainer gets: streamed workers hand over uint8 batches, normalized once on the batch's device
    raw = list(streamed.val_dataloader())
    assert all(x.dtype == torch.uint8 for x, _ in raw)
    a = [memory.on_after_batch_transfer(b, 0) for b in memory.val_dataloader()]
    b = [streamed.on_after_batch_transfer(b, 0) for b in raw]
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, b, strict=True))


def test_streamed_training_is_seeded(make_cfg):
    overrides = (
        "data.cache_max_gb=0",
        "debug=limit",
        "trainer.max_epochs=2",
        "test=false",
        "data.loader.num_workers=2",
    )
    a = train(make_cfg(*overrides), publish=False)
    b = train(make_cfg(*overrides), publish=False)
    assert a["train/loss"] == b["train/loss"] and a["val/loss"] == b["val/loss"]


def test_outlier_rows_are_streamed_with_label_minus_one(make_cfg):
    dm = build_datamodule(make_cfg("data.cache_max_gb=0", "data.outliers.images=8"))
    dm.setup("fit")
    labels = Counter(int(y) for _, y in dm.splits["train"])
    assert labels[-1] == 8 and sum(labels.values()) == dm.splits["train"].total_rows


@pytest.mark.parametrize("damage", ["missing", "unreadable"])
def test_a_broken_shard_fails_before_training_naming_the_file(small_files, tmp_path, make_cfg, damage):
    shards = tmp_path / "shards"
    shutil.copytree(small_files, shards)
    broken = shards / "test" / "part-00001.parquet"  # the test split: still checked before fitting starts
    if damage == "missing":
        broken.unlink()
    else:
        broken.write_bytes(broken.read_bytes()[:100])
    cfg = make_cfg(f"paths.shards_dir={shards}", "data.outliers.images=0")
    with pytest.raises(ShardsError, match=f"^shard {broken} is {damage}") as err:
        train(cfg, publish=False)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "run" / "checkpoints").exists()  # nothing trained


def test_the_datamodule_checks_shards_once(small_files):
    dm = ShardDataModule(str(small_files), image_size=32, batch_size=8, cache_max_gb=0)
    dm.check_shards()
    groups = dm.row_groups
    dm.check_shards()
    assert dm.row_groups is groups and sum(g.rows for g in groups["train"]) == len(read_split(small_files, "train"))


@pytest.mark.slow
def test_ddp_ranks_stream_their_own_parts_in_lockstep(tmp_path, tiny_shards):
    """Two CPU processes: equal shares per rank (a rank with one batch more would hang DDP), one log line."""
    proc = run_script(
        "train.py",
        "trainer=ddp",
        "trainer.devices=2",
        "trainer.max_epochs=2",
        "data.cache_max_gb=0",
        "data.loader.num_workers=1",
        *run_overrides(tmp_path, tiny_shards),
        f"hydra.run.dir={tmp_path / 'run'}",
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (proc.stdout + proc.stderr).count("data input: streaming from the shards") == 1
    assert (tmp_path / "models" / "best.ckpt").is_file()


def test_inputs_decoded_on_access_equal_the_decoded_split(small_files, caplog):
    """The export's and evaluation's inputs above data.cache_max_gb: the same values and labels, batch by batch,
    masks and seeded subsets included; memory holds one row group, not the split."""
    import numpy as np

    from mycolens.data.inputs import LazyImages, load_images, split_inputs

    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    x, y = load_images(small_files, "train", 32, mean, std)
    with caplog.at_level(logging.INFO, logger="mycolens.data.inputs"):
        lazy, labels = split_inputs(small_files, "train", 32, mean, std, max_gb=0)
    assert isinstance(lazy, LazyImages) and "train inputs: decoded on access" in caplog.text
    assert len(lazy) == len(x) and np.array_equal(labels, y) and len(lazy.encoded.groups) > 3
    np.testing.assert_array_equal(lazy[5:37], x[5:37])  # across row groups
    keep = y % 3 == 0
    np.testing.assert_array_equal(lazy[keep][0 : len(x)], x[keep])
    sub, sub_labels = split_inputs(small_files, "train", 32, mean, std, max_gb=0, limit=9, seed=4)
    xs, ys = load_images(small_files, "train", 32, mean, std, limit=9, seed=4)
    np.testing.assert_array_equal(sub[0:9], xs)
    assert np.array_equal(sub_labels, ys)
    fits, _ = split_inputs(small_files, "train", 32, mean, std, max_gb=1.0)
    assert isinstance(fits, np.ndarray)
