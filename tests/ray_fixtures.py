"""Helpers for the Ray tests: overrides onto the tiny 32px shards (conftest's `tiny_shards`), a small local Ray."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

from tests.conftest import ROOT

CONF = ROOT / "conf"
PYTHON = str(ROOT / ".venv" / "bin" / "python")
RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "DVC_NO_ANALYTICS": "1",
    "WANDB_MODE": "offline",
    "MYCOLENS_ROOT": str(ROOT),
}
for _k, _v in RAY_ENV.items():
    os.environ.setdefault(_k, _v)


def tiny_overrides(tmp: Path, shards: Path) -> list[str]:
    """Hydra overrides that keep every artifact of a run under `tmp` and train on the tiny shards quickly."""
    return [
        f"paths.root_dir={ROOT}",
        f"paths.data_dir={tmp}/data",
        f"paths.shards_dir={shards}",
        f"paths.models_dir={tmp}/models",
        f"paths.reports_dir={tmp}/reports",
        f"paths.log_dir={tmp}/logs",
        "data.image_size=32",
        "data.loader.batch_size=16",
        "data.outliers.images=8",  # outlier exposure: a few, as conftest's tiny data does
        "model.backbone_kwargs.channels=[8,16]",
        "trainer.max_epochs=2",
        "trainer.log_every_n_steps=1",
        "ray.num_cpus=2",
    ]


def compose_cfg(overrides: list[str], output_dir: Path, config_name: str = "config") -> DictConfig:
    """The composed config as scripts/train.py would see it, with the run folder set (no Hydra runtime here)."""
    GlobalHydra.instance().clear()  # conftest's compose leaves it initialized
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg


@pytest.fixture
def local_ray() -> Iterator[None]:
    """A 2-CPU local Ray (no dashboard, small object store) for one test; always shut down."""
    import ray

    ray.init(address="local", num_cpus=2, object_store_memory=150 * 2**20, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def kill_group(pid: int) -> None:
    """SIGKILL the process group of a subprocess this test started (start_new_session=True), if still there."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def start_own_group(cmd: list[str], **popen: Any) -> subprocess.Popen:
    """Start a project command from the repo root in its own process group (kill_group ends it), with Ray's test env."""
    return subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **RAY_ENV}, start_new_session=True, **popen)


def run_own_group(cmd: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    """Run a project command in its own process group with Ray's test env; kill what it leaves (its local Ray)."""
    proc = start_own_group(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        kill_group(proc.pid)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, "")


def registered_checkpoints(storage: Path) -> int:
    """How many checkpoints Ray Train has registered (its checkpoint manager snapshot), 0 before the first."""
    for snap in storage.glob("*/checkpoint_manager_snapshot.json"):
        try:
            return len(json.loads(snap.read_text()).get("checkpoint_results") or [])
        except (OSError, ValueError):
            return 0
    return 0
