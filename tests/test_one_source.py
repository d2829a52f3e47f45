"""One source per value: conf/export's `verdict` reaches training's metric, the export's model.json and the
served verdict (no code default stands in for it); serve/config.yaml names the model conf/serve names."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

from mycolens.verdict.rule import VerdictRule

if TYPE_CHECKING:
    from tests.conftest_export import Workspace

pytest_plugins = ["tests.conftest_export"]  # fixtures: workspace, exported

OVERRIDES = ("export.verdict.edible_min_confidence=0.42", "export.verdict.poison_max=0.33")


def test_the_rule_has_no_code_defaults_for_what_conf_sets() -> None:
    required = {
        f.name
        for f in dataclasses.fields(VerdictRule)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    assert required == {"edible_min_confidence", "poison_max", "do_not_eat_min"}
    with pytest.raises(TypeError):
        VerdictRule()  # type: ignore[call-arg]


def test_a_threshold_changed_in_conf_reaches_training_export_and_serving(workspace: Workspace, tmp_path: Path) -> None:
    from mycolens.inference.onnx_model import OnnxClassifier
    from mycolens.training.run import build_datamodule, build_module

    cfg = workspace.cfg(*OVERRIDES)
    module = build_module(cfg, build_datamodule(cfg))
    assert module.val_unsafe.rule.edible_min_confidence == 0.42 and module.val_unsafe.rule.poison_max == 0.33
    assert module.hparams.verdict["edible_min_confidence"] == 0.42  # travels in the checkpoint

    proc = workspace.run("export.py", f"ckpt_path={workspace.best}", *OVERRIDES, root=tmp_path)
    assert proc.returncode in (0, 2), proc.stderr[-2000:]
    meta = json.loads((tmp_path / "models" / "export" / "model.json").read_text())
    for variant in ("fp32", "int8"):
        rule = meta["verdict_by_variant"][variant]
        assert (rule["edible_min_confidence"], rule["poison_max"]) == (0.42, 0.33)
        served = OnnxClassifier(meta, None, variant).rule  # what serving and offline prediction apply
        assert (served.edible_min_confidence, served.poison_max) == (0.42, 0.33)


def test_serve_config_user_config_is_conf_serve() -> None:
    """serve/config.yaml's model user_config names the model conf/serve names (no second source for the variant)."""
    from tests.conftest import ROOT, compose

    cfg = compose([], ROOT)
    deployments = yaml.safe_load((ROOT / "serve" / "config.yaml").read_text())["applications"][0]["deployments"]
    user = next(d["user_config"] for d in deployments if "user_config" in d)
    assert user["variant"] == cfg.serve.variant
    assert (ROOT / user["model_dir"]).resolve() == Path(cfg.serve.model_dir).resolve()
