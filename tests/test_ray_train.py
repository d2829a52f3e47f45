"""Ray Train (`trainer=ray`): 2 DDP workers on a local 2-CPU Ray, same artifacts as a local run. Failure recovery
(a worker lost with its node, the run restarted from its checkpoint) is tested on a simulated cluster in
tests/test_cluster.py."""
# ruff: noqa: F811  (pytest fixtures imported from ray_fixtures are used as parameters)

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer

from mycolens.models.module import MushroomClassifier
from mycolens.training.ray_train import RAY_KEYS, split_trainer_config, train_on_ray
from mycolens.training.run import build_datamodule, evaluate_checkpoint
from mycolens.utils.ray_session import ray_init_kwargs
from tests.ray_fixtures import compose_cfg, local_ray, tiny_overrides  # noqa: F401

pytestmark = pytest.mark.slow


def test_split_trainer_config_keeps_ray_keys_out_of_lightning() -> None:
    lightning, ray_opts = split_trainer_config({"max_epochs": 3, "num_workers": 2, "use_gpu": False, "engine": "ray"})
    assert lightning == {"max_epochs": 3}
    assert ray_opts == {"num_workers": 2, "use_gpu": False, "engine": "ray"}
    assert set(ray_opts) <= set(RAY_KEYS)


def test_ray_init_kwargs_local_vs_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    local = ray_init_kwargs({"address": None, "num_cpus": 2, "object_store_memory": 10**8, "include_dashboard": False})
    assert local["address"] == "local" and local["num_cpus"] == 2 and local["include_dashboard"] is False
    cluster = ray_init_kwargs({"address": "auto", "num_cpus": 2})
    assert cluster["address"] == "auto" and "num_cpus" not in cluster


def validate_locally(cfg, ckpt: Path) -> dict[str, float]:
    """Validation metrics of a checkpoint in one plain process (no Ray, no DDP)."""
    model = MushroomClassifier.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True)
    trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_checkpointing=False)
    (result,) = trainer.validate(model, datamodule=build_datamodule(cfg), verbose=False)
    return {k: float(v) for k, v in result.items()}


def test_ray_train_two_workers_publishes_a_checkpoint_the_local_evaluator_reads(
    tmp_path: Path, tiny_shards: Path, local_ray: None
) -> None:
    """Streamed input (data.cache_max_gb=0; the in-memory path runs in tests/test_cluster.py): each worker reads
    its own part of every split; the val metrics the two workers report together equal one process's on the whole
    split, so the parts cover it without overlap."""
    cfg = compose_cfg(
        [*tiny_overrides(tmp_path, tiny_shards), "trainer=ray", "trainer.num_workers=2", "data.cache_max_gb=0"],
        tmp_path / "run",
    )
    metrics = train_on_ray(cfg)

    best = tmp_path / "models" / "best.ckpt"
    report = json.loads((tmp_path / "reports" / "train.json").read_text())
    assert best.is_file() and report["ray_workers"] == 2 and report["epochs"] == 2
    ckpt = torch.load(best, map_location="cpu", weights_only=True)
    assert ckpt["hyper_parameters"]["backbone"] == "small_cnn"

    # test metrics in reports/train.json = the local evaluator on models/best.ckpt
    evaluated = evaluate_checkpoint(compose_cfg(tiny_overrides(tmp_path, tiny_shards), tmp_path / "eval"), str(best))
    for k in ("test/accuracy", "test/macro_f1", "test/unsafe_edible_rate"):
        assert report[k] == pytest.approx(evaluated[k], abs=1e-6)
    # validation metrics the 2 DDP workers reported for that checkpoint = one local process on the same weights
    local_val = validate_locally(cfg, best)
    for k in ("val/accuracy", "val/macro_f1", "val/unsafe_edible_rate"):
        assert metrics["best_metrics"][k] == pytest.approx(local_val[k], abs=1e-5)
