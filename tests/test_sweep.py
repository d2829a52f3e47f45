"""Ray Tune sweeps (scripts/sweep.py) on one node: ASHA stops a Ray Train trial and frees its workers, an interrupted
sweep resumes. The sweep that loses a node, stops a diverging trial and trains its best config is in
tests/test_cluster.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from mycolens.tuning.space import build_param_space, flatten_space, is_sweep_override, objective_value, to_overrides
from tests.conftest import ROOT
from tests.ray_fixtures import PYTHON, kill_group, run_own_group, start_own_group, tiny_overrides

pytestmark = pytest.mark.slow


def test_search_space_text_and_target_forms_become_tune_samplers() -> None:
    from ray.tune.search.sample import Categorical, Float

    space = {
        "model": {"optimizer": {"lr": "loguniform(1e-4, 1e-2)"}, "label_smoothing": "choice([0.0, 0.1])"},
        "data": {"loader": {"batch_size": {"_target_": "ray.tune.choice", "categories": [16, 32]}}},
        "trainer": {"max_epochs": 3},
    }
    assert sorted(flatten_space(space)) == [
        "data.loader.batch_size",
        "model.label_smoothing",
        "model.optimizer.lr",
        "trainer.max_epochs",
    ]
    built = build_param_space(space)
    assert isinstance(built["model.optimizer.lr"], Float) and isinstance(built["model.label_smoothing"], Categorical)
    assert isinstance(built["data.loader.batch_size"], Categorical) and built["trainer.max_epochs"] == 3
    assert to_overrides({"model": "resnet18", "model.optimizer.lr": 0.002, "x.channels": [8, 16], "s": "a b"}) == [
        "model=resnet18",
        "model.optimizer.lr=0.002",
        "s='a b'",
        "x.channels=[8,16]",
    ]
    assert (
        is_sweep_override("sweep=optuna")
        and is_sweep_override("~sweep.search_space.x")
        and not is_sweep_override("model=resnet18")
    )
    assert objective_value(
        {"val/accuracy": 0.9, "val/unsafe_edible_rate": 0.05}, {"val/accuracy": 1, "val/unsafe_edible_rate": -2}
    ) == pytest.approx(0.8)


def sweep_cmd(tmp: Path, shards: Path, name: str, lrs: list[float]) -> list[str]:
    """scripts/sweep.py on the tiny shards: one trial per lr, one at a time (so ASHA's rung order is fixed), 2 epochs."""
    grid = ",".join(repr(x) for x in lrs)
    return [
        PYTHON,
        str(ROOT / "scripts" / "sweep.py"),
        "sweep=asha",
        *tiny_overrides(tmp, shards),
        f"sweep.name={name}",
        f"sweep.storage_path={tmp}/sweeps",
        f"sweep.experiment_file={tmp}/conf/experiment/sweep_{name}.yaml",
        "sweep.num_samples=1",
        f"sweep.search_space.model.optimizer.lr='grid_search([{grid}])'",
        "~sweep.search_space.model.optimizer.weight_decay",
        "~sweep.search_space.model.label_smoothing",
        "sweep.max_concurrent_trials=1",
        "sweep.resources_per_trial.CPU=2",
        "sweep.metric=val/loss",  # continuous: no ties at ASHA's rung
        "sweep.mode=min",
    ]


def test_asha_stops_a_ray_train_trial_and_the_next_trial_gets_its_workers(tmp_path: Path, tiny_shards: Path) -> None:
    # trainer=ray: each trial is a Ray Train run (1 worker, 1 CPU) driven from a 1-CPU trial actor, so on 2 CPUs a
    # trial only starts once the previous one released its worker. lr=0.3 diverges and is stopped after epoch 1
    # (the first trial gives ASHA's rung a value to compare with); the trial after it must still run to the end (a
    # leaked worker would leave it pending until timeout)
    cmd = [c for c in sweep_cmd(tmp_path, tiny_shards, "raytrain", [1e-7, 0.3, 1e-7]) if "resources_per" not in c]
    cmd += ["trainer=ray", "trainer.num_workers=1", "sweep.resources_per_trial.CPU=1", "trainer.max_epochs=3"]
    done = run_own_group(cmd, timeout=700)
    assert done.returncode == 0, done.stdout[-4000:]
    table = pd.read_csv(tmp_path / "sweeps" / "raytrain" / "results.csv").set_index("param:model.optimizer.lr")
    assert table.loc[0.3, "stopped_early"] and table.loc[0.3, "epochs"] == 1
    assert (table.loc[1e-7, "epochs"] == 3).all() and len(table) == 3
    assert (tmp_path / "sweeps" / "raytrain" / "best.ckpt").is_file()


def first_finished_trial(tune_dir: Path) -> str | None:
    """The id of a trial whose result.json has its final (done) row, if any."""
    for result in tune_dir.glob("trial_*/result.json"):
        try:
            rows = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        except ValueError:  # a line being written
            continue
        if any(r.get("done") for r in rows):
            return rows[-1]["trial_id"]
    return None


def test_interrupted_sweep_resumes_instead_of_starting_again(tmp_path: Path, tiny_shards: Path) -> None:
    cmd = sweep_cmd(tmp_path, tiny_shards, "resume", [3e-3, 1e-7, 3e-3])
    tune_dir = tmp_path / "sweeps" / "resume" / "tune"
    proc = start_own_group(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    finished = None
    try:
        deadline = time.monotonic() + 600
        while proc.poll() is None and time.monotonic() < deadline and finished is None:
            finished = first_finished_trial(tune_dir)
            time.sleep(0.5)
        assert finished is not None, "no trial finished before the sweep ended or timed out"
        assert proc.poll() is None, "the sweep ended before it could be interrupted"
        os.kill(proc.pid, signal.SIGKILL)  # the sweep's driver dies mid-sweep
        proc.wait(timeout=60)
    finally:
        kill_group(proc.pid)
    before = {p.name.removeprefix("trial_") for p in tune_dir.glob("trial_*")}
    assert not (tmp_path / "sweeps" / "resume" / "summary.json").exists()

    again = run_own_group(cmd)
    assert again.returncode == 0, again.stdout[-4000:]
    summary = json.loads((tmp_path / "sweeps" / "resume" / "summary.json").read_text())
    table = pd.read_csv(tmp_path / "sweeps" / "resume" / "results.csv")
    assert summary["resumed"] is True
    assert summary["trials"] == 3 and len(table) == 3 and table["best_val/loss"].notna().all()
    assert before <= set(table["trial_id"]), "the resumed sweep lost trials of the interrupted one"
    assert finished in set(table["trial_id"])
