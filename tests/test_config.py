"""Every config group option composes with the real config.yaml and instantiates."""

import subprocess
import sys

import pytest
import yaml
from hydra.utils import instantiate
from omegaconf import OmegaConf

from mycolens.training.run import build_callbacks, build_datamodule, build_loggers, build_module
from tests.conftest import ROOT, compose


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml") if p.stem != "default")


@pytest.mark.parametrize("model", options("model"))
def test_every_model_instantiates_with_the_catalogue(tmp_path, tiny_shards, model):
    cfg = compose([f"model={model}", f"paths.shards_dir={tiny_shards}", "data.image_size=32"], tmp_path)
    dm = build_datamodule(cfg)
    module = build_module(cfg, dm)
    assert module.catalogue.ids == dm.catalogue.ids
    assert module.hparams.backbone == cfg.model.backbone


@pytest.mark.parametrize("trainer", options("trainer"))
def test_every_trainer_config_composes(tmp_path, trainer):
    cfg = compose([f"trainer={trainer}"], tmp_path)
    own = yaml.safe_load((ROOT / "conf" / "trainer" / f"{trainer}.yaml").read_text())
    own.pop("defaults", None)
    assert cfg.trainer._target_ == "lightning.pytorch.trainer.Trainer"  # every option builds on trainer/default
    composed = OmegaConf.to_container(cfg.trainer, resolve=False)
    assert {k: composed.get(k) for k in own} == own  # and the option's own settings win


@pytest.mark.parametrize("logger", options("logger"))
def test_every_logger_instantiates_offline(tmp_path, logger):
    cfg = compose([f"logger={logger}", f"paths.reports_dir={tmp_path}"], tmp_path)
    loggers = build_loggers(cfg)
    assert loggers


@pytest.mark.parametrize("debug", options("debug"))
def test_every_debug_config_composes(tmp_path, debug):
    cfg = compose([f"debug={debug}"], tmp_path)
    assert cfg.trainer.devices == 1


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_composes(tmp_path, experiment):
    cfg = compose([f"experiment={experiment}"], tmp_path)
    assert cfg.model._target_


def test_callbacks_instantiate(tmp_path):
    cfg = compose([], tmp_path)
    names = {type(c).__name__ for c in build_callbacks(cfg)}
    assert {"ModelCheckpoint", "EarlyStopping", "LearningRateMonitor", "TQDMProgressBar"} <= names


def test_trainer_instantiates(tmp_path):
    cfg = compose([], tmp_path)
    trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    assert trainer.max_epochs == cfg.trainer.max_epochs


def test_cfg_job_prints_a_readable_config():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts/train.py"), "--cfg", "job", "model=resnet18"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "backbone: resnet18" in proc.stdout and "max_epochs:" in proc.stdout


def test_bad_override_fails_in_a_few_lines():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts/train.py"), "trainer.max_epochz=3"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    assert "max_epochz" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.splitlines()) < 10


def test_the_committed_params_yaml_is_what_conf_composes() -> None:
    """A fresh clone's params.yaml (what `dvc params diff` and `dvc exp show` read) never disagrees with conf/."""
    from mycolens.params import compose_params, dump

    assert (ROOT / "params.yaml").read_text() == dump(compose_params(ROOT / "conf")), "run `python scripts/params.py`"
