"""Fixtures for export, evaluation, class order and offline prediction: one tiny trained teacher, exported once.

A test file loads them with `pytest_plugins = ["tests.conftest_export"]` (tests/conftest.py belongs to the lead);
the expensive steps are cached per session, so every test file shares one training run and one export.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.conftest import compose, run_overrides, run_script

_CACHE: dict[str, Any] = {}


@dataclass
class Workspace:
    """A tiny project: the session's synthetic shards, a trained teacher and its paths, as Hydra overrides."""

    root: Path
    shards: Path
    ood_sets: Path

    models: Path = field(init=False)  # root/models, holding best.ckpt and export/
    best: Path = field(init=False)
    export_dir: Path = field(init=False)
    reports: Path = field(init=False)

    def __post_init__(self) -> None:
        self.models = self.root / "models"
        self.best = self.models / "best.ckpt"
        self.export_dir = self.models / "export"
        self.reports = self.root / "reports"

    def overrides(self, root: Path | None = None) -> list[str]:
        """Path overrides putting every output under `root` (this workspace by default)."""
        return run_overrides(root or self.root, self.shards, self.ood_sets)

    def cfg(self, *extra: str, root: Path | None = None) -> Any:
        """The real config composed with this workspace's paths."""
        return compose([*self.overrides(root), *extra], root or self.root)

    def run(self, script: str, *extra: str, root: Path | None = None) -> subprocess.CompletedProcess:
        """Run scripts/<script> as a user would, with this workspace's paths."""
        return run_script(script, *self.overrides(root), *extra)

    def export_settings(self, *extra: str, root: Path | None = None) -> Any:
        """ExportSettings from the composed config, as scripts/export.py builds them."""
        return export_settings(self.cfg(*extra, root=root))

    def unsafe_checkpoint(self, dst: Path) -> Path:
        """The teacher, made to call every image an edible species (see make_unsafe_checkpoint)."""
        return make_unsafe_checkpoint(self.best, dst)


def build_workspace(root: Path, shards: Path, ood_sets: Path) -> Workspace:
    """Train a small_cnn teacher at 32 px with the real training code (debug=limit) into root/models/best.ckpt."""
    from mycolens.training.run import train

    ws = Workspace(root, shards, ood_sets)
    train(ws.cfg("debug=limit", "trainer.max_epochs=2"))
    assert ws.best.is_file()
    return ws


def export_settings(cfg: Any) -> Any:
    """ExportSettings from a composed config, as scripts/export.py builds them."""
    from omegaconf import OmegaConf

    from mycolens.export import ExportSettings

    return ExportSettings.from_config(OmegaConf.to_container(cfg.export, resolve=True))


def evaluation_args(cfg: Any, gate_limit: float = 1.0) -> dict[str, Any]:
    """evaluate_variants' rule, OOD settings and a permissive gate from a composed config, as scripts/evaluate.py builds them."""
    from omegaconf import OmegaConf

    from mycolens.ood.fit import OodSettings
    from mycolens.verdict.rule import VerdictRule

    return {
        "rule": VerdictRule(**{k: float(v) for k, v in cfg.export.verdict.items()}),
        "ood": OodSettings.from_config(
            float(cfg.export.calibration.keep_in_distribution), OmegaConf.to_container(cfg.export.ood, resolve=True)
        ),
        "gate": {"limit": gate_limit, "min_ood_abstain": 0.0, "max_ood_edible": 10**9},
    }


def make_unsafe_checkpoint(src: Path, dst: Path, edible_id: str = "agaricus_campestris") -> Path:
    """A copy of `src` whose classifier bias makes every image an edible species (so poisonous ones are called edible)."""
    from mycolens.catalogue import load_catalogue

    ckpt = torch.load(src, map_location="cpu", weights_only=True)
    bias = next(k for k in ckpt["state_dict"] if k.endswith("classifier.bias"))
    index = load_catalogue().index(edible_id)
    ckpt["state_dict"][bias] = torch.zeros_like(ckpt["state_dict"][bias])
    ckpt["state_dict"][bias][index] = 1000.0
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, dst)
    return dst


@pytest.fixture(scope="session")
def workspace(tmp_path_factory: pytest.TempPathFactory, tiny_shards: Path, tiny_ood_sets: Path) -> Workspace:
    """The trained tiny teacher (once per session)."""
    if "workspace" not in _CACHE:
        _CACHE["workspace"] = build_workspace(tmp_path_factory.mktemp("export_ws"), tiny_shards, tiny_ood_sets)
    return _CACHE["workspace"]


@pytest.fixture(scope="session")
def exported(workspace: Workspace) -> dict[str, Any]:
    """models/export from `python scripts/export.py ckpt_path=models/best.ckpt` (once per session).

    Returns {"meta": model.json, "stdout": the script's output, "dir": the folder}.
    """
    if "exported" not in _CACHE:
        proc = workspace.run("export.py", f"ckpt_path={workspace.best}")
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        meta = json.loads((workspace.export_dir / "model.json").read_text())
        _CACHE["exported"] = {"meta": meta, "stdout": proc.stdout, "dir": workspace.export_dir}
    return _CACHE["exported"]
