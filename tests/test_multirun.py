"""Hydra multirun on Ray (`-m ... hydra/launcher=ray`): every job a Ray task with its own output folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT
from tests.ray_fixtures import PYTHON, run_own_group, tiny_overrides

pytestmark = pytest.mark.slow


def test_ray_launcher_runs_each_job_in_its_own_folder(tmp_path: Path, tiny_shards: Path) -> None:
    base = [o for o in tiny_overrides(tmp_path, tiny_shards) if not o.startswith(("model.", "trainer.max_epochs"))]
    cmd = [
        PYTHON,
        str(ROOT / "scripts" / "train.py"),
        "-m",
        "model=small_cnn,resnet18",
        "model.optimizer.lr=1e-3,3e-3",
        "hydra/launcher=ray",
        "trainer.max_epochs=1",
        *base,
    ]
    proc = run_own_group(cmd, timeout=800)
    out = proc.stdout
    assert proc.returncode == 0, out[-4000:]
    assert "Ray Launcher is launching 4 jobs" in out

    (sweep_dir,) = (tmp_path / "logs" / "train" / "multiruns").iterdir()
    jobs = sorted(p for p in sweep_dir.iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0", "1", "2", "3"]
    combos = set()
    for job in jobs:
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        model = next(o.split("=")[1] for o in overrides if o.startswith("model="))
        lr = next(float(o.split("=")[1]) for o in overrides if o.startswith("model.optimizer.lr="))
        combos.add((model, lr))
        assert (job / "train.log").is_file()
        assert (job / "csv" / "metrics.csv").is_file()  # the job's own logger folder
        assert list((job / "checkpoints").glob("*.ckpt"))  # and its own checkpoints
        assert f"run folder: {job}" in out
    assert combos == {(m, lr) for m in ("small_cnn", "resnet18") for lr in (1e-3, 3e-3)}
    assert not (tmp_path / "models" / "best.ckpt").exists()  # multirun jobs do not publish to models/
