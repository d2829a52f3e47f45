"""Training with real Lightning and real Hydra on tiny synthetic shards."""

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from mycolens.models.module import MushroomClassifier
from mycolens.training.run import checkpoint_summary, evaluate_checkpoint, train
from tests.conftest import TINY_DATA, compose, last_line, run_overrides, run_script


@pytest.mark.parametrize("model", ["small_cnn", "resnet18", "mobilenet_v3_small", "efficientnet_b0"])
def test_fast_dev_run_trains_every_backbone(make_cfg, model):
    metrics = train(make_cfg(f"model={model}", "debug=fdr"))
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))
    assert "test/accuracy" in metrics


def test_training_publishes_a_checkpoint_that_loads_with_weights_only(make_cfg, tmp_path):
    cfg = make_cfg("debug=limit")
    metrics = train(cfg)
    best = tmp_path / "models" / "best.ckpt"
    assert best.is_file()
    report = json.loads((tmp_path / "reports" / "train.json").read_text())
    assert report["epochs"] == 3 and "val/unsafe_edible_rate" in report
    model = MushroomClassifier.load_from_checkpoint(best, map_location="cpu", weights_only=True)
    assert model.catalogue.ids == checkpoint_summary(best)["classes"]
    tested = evaluate_checkpoint(cfg, str(best))
    assert tested["test/accuracy"] == pytest.approx(metrics["test/accuracy"])


def test_resume_from_last_checkpoint_continues_from_the_saved_epoch(make_cfg, tmp_path, tiny_shards):
    first = make_cfg("debug=limit", "trainer.max_epochs=2")
    train(first, publish=False)
    last = Path(first.paths.output_dir) / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["epoch"] == 1
    overrides = [*TINY_DATA, f"paths.shards_dir={tiny_shards}", "debug=limit", "trainer.max_epochs=4"]
    resumed = compose([*overrides, f"ckpt_path={last}"], tmp_path / "resumed")
    metrics = train(resumed, publish=False)
    assert metrics["epochs"] == 4
    logged = pd.read_csv(tmp_path / "resumed" / "run" / "csv" / "metrics.csv")
    trained = logged.dropna(subset=["train/loss"])
    assert sorted(trained["epoch"].astype(int).unique()) == [2, 3]  # epochs 0-1 came from the checkpoint


class SaveAtValidationEnd(Callback):
    """Saves the first epoch's checkpoint where Tune trials and Ray Train workers report theirs: at validation end."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking and trainer.current_epoch == 0:
            trainer.save_checkpoint(self.path)


def test_resume_from_a_validation_end_checkpoint_with_early_stopping_on(make_cfg, tmp_path, tiny_shards):
    """A retried Tune trial or a restarted Ray Train group resumes from such a checkpoint, early stopping on."""
    saved = tmp_path / "at-validation-end.ckpt"
    first = make_cfg(
        "debug=limit",
        "trainer.max_epochs=1",
        "test=false",
        f"+callbacks.save_at_val_end._target_={__name__}.SaveAtValidationEnd",
        f"+callbacks.save_at_val_end.path={saved}",
    )
    assert first.callbacks.early_stopping is not None
    train(first, publish=False)
    overrides = [*TINY_DATA, f"paths.shards_dir={tiny_shards}", "debug=limit", "trainer.max_epochs=3", "test=false"]
    metrics = train(compose([*overrides, f"ckpt_path={saved}"], tmp_path / "resumed"), publish=False)
    assert metrics["epochs"] == 3


def test_same_seed_gives_the_same_weights(make_cfg):
    a = train(make_cfg("debug=limit", "trainer.max_epochs=1", "test=false"), publish=False)
    b = train(make_cfg("debug=limit", "trainer.max_epochs=1", "test=false"), publish=False)
    assert a["train/loss"] == b["train/loss"] and a["val/loss"] == b["val/loss"]


def test_missing_data_is_one_clear_line(tmp_path):
    proc = run_script("train.py", f"paths.data_dir={tmp_path}/nothing")
    assert proc.returncode == 2
    assert last_line(proc.stderr) == (
        f"error: no shards at {tmp_path}/nothing/shards (manifest.json missing): run `python scripts/data.py` first"
    )


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_writes_one_run(tmp_path, tiny_shards):
    run_dir = tmp_path / "run"
    proc = run_script(
        "train.py",
        "trainer=ddp",
        "trainer.devices=2",
        "trainer.max_epochs=2",
        *run_overrides(tmp_path, tiny_shards),
        f"hydra.run.dir={run_dir}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert len(names) == 2 and names[0].startswith("epoch_") and names[1] == "last.ckpt", names
    assert len(list(run_dir.rglob("metrics.csv"))) == 1
    assert (tmp_path / "models" / "best.ckpt").is_file()
    assert len(list(tmp_path.glob("reports/*.json"))) == 1
    assert not any(p.name.startswith("train_ddp_process") for p in tmp_path.rglob("*") if p.is_dir())
