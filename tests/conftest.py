"""Shared fixtures: the real config composed with a few overrides, and tiny synthetic shards."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mycolens.utils.paths import repo_root

ROOT = repo_root(env=False)  # the repository: every test module imports this one

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TQDM_MININTERVAL", "5")

TINY_DATA = [
    "data.image_size=32",
    "data.generate.specimens_per_class=6",
    "data.generate.photos_per_specimen=2",
    "data.generate.ood_images=12",
    "data.loader.batch_size=32",
    "data.outliers.images=8",
    # a 2-epoch model on 168 photos cannot abstain on 95% of every OOD set: the OOD gate is tested on its own
    "export.safety_gate.min_ood_abstain=0.0",
    "export.safety_gate.max_ood_edible=1000000",
]


def compose(overrides: list[str], tmp: Path):
    """The real conf/config.yaml with overrides, outputs under `tmp`, HydraConfig set as in a run."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = hydra_compose("config", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(tmp / "run")
        cfg.hydra.job.num = 0
        cfg.paths.output_dir = str(tmp / "run")
    HydraConfig.instance().set_config(cfg)
    return cfg


def make_shards(
    out: Path,
    *,
    specimens_per_class: int,
    photos_per_specimen: int,
    ood_images: int,
    seed: int,
    image_size: int = 32,
    rows_per_file: int = 2000,
    workers: int = 1,
    catalogue: Any = None,
) -> Path:
    """Synthetic shards at `out`, split 50/25/25 by specimen (difficulty 1, JPEG quality 90): every test's generator."""
    from mycolens.catalogue import load_catalogue
    from mycolens.data.generate import generate_dataset

    generate_dataset(
        out,
        load_catalogue() if catalogue is None else catalogue,
        image_size=image_size,
        specimens_per_class=specimens_per_class,
        photos_per_specimen=photos_per_specimen,
        difficulty=1.0,
        ood_images=ood_images,
        splits={"train": 0.5, "val": 0.25, "test": 0.25},
        seed=seed,
        workers=workers,
        jpeg_quality=90,
        rows_per_file=rows_per_file,
    )
    return out


@pytest.fixture(scope="session")
def tiny_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic shards at 32 px: 14 classes x 6 specimens x 2 photos, plus 12 OOD images."""
    out = tmp_path_factory.mktemp("data") / "shards"
    return make_shards(out, specimens_per_class=6, photos_per_specimen=2, ood_images=12, seed=7)


def run_overrides(out: Path, shards: Path, ood_sets: Path | None = None) -> list[str]:
    """TINY_DATA on `shards` (and `ood_sets`), with models/, reports/ and logs/ under `out`."""
    return [
        *TINY_DATA,
        f"paths.shards_dir={shards}",
        *([f"paths.ood_sets_dir={ood_sets}"] if ood_sets is not None else []),
        f"paths.models_dir={out / 'models'}",
        f"paths.reports_dir={out / 'reports'}",
        f"paths.log_dir={out / 'logs'}",
    ]


def run_script(script: str, *args: str, timeout: int | None = 600) -> subprocess.CompletedProcess:
    """Run scripts/<script> with `args` as a user would (from the repo root, telemetry off); output captured."""
    env = {
        **os.environ,
        "MYCOLENS_ROOT": str(ROOT),
        "RAY_USAGE_STATS_ENABLED": "0",
        "DVC_NO_ANALYTICS": "1",
        "WANDB_MODE": "offline",
        "HYDRA_FULL_ERROR": "0",
    }
    cmd = [sys.executable, str(ROOT / "scripts" / script), *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def last_line(text: str) -> str:
    """The last line of a script's output (where its one-line error stands)."""
    return text.strip().splitlines()[-1]


# POST /feedback refusals, (case, HTTP status, error code): the in-process router and the served app both test these
FEEDBACK_REFUSALS = [
    ("unknown_species", 422, "unknown_species"),
    ("oversized_body", 413, "too_large"),
    ("not_an_image", 400, "not_image"),
    ("crafted_file_name", 400, "bad_filename"),
]


HELD_OUT_FAMILIES = yaml.safe_load((ROOT / "conf" / "evaluate" / "default.yaml").read_text())["ood_sets"][
    "held_out_families"
]
REAL_SETS = ("real_photos", "real_photo_crops", "real_digits", "real_faces")
# every named OOD set evaluation and the export gate report: the shards' split, held-out families, real images
OOD_SET_NAMES = {"synthetic", *(f"family_{f}" for f in HELD_OUT_FAMILIES), *REAL_SETS}


@pytest.fixture(scope="session")
def tiny_ood_sets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The named OOD test sets at 32 px, with few procedural images (the real ones are all there)."""
    from mycolens.data.ood_sets import build_ood_sets

    out = tmp_path_factory.mktemp("data") / "ood_sets"
    build_ood_sets(out, image_size=32, seed=3, held_out_families=HELD_OUT_FAMILIES, family_images=6, crops_per_photo=1)
    return out


@pytest.fixture
def make_cfg(tmp_path: Path, tiny_shards: Path, tiny_ood_sets: Path) -> Callable[..., object]:
    """Compose the real config on the tiny shards with outputs in tmp_path; extra overrides as arguments."""

    def _make(*overrides: str):
        return compose([*run_overrides(tmp_path, tiny_shards, tiny_ood_sets), *overrides], tmp_path)

    return _make


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    from serve.browser import launch

    with sync_playwright() as p:
        b = launch(p)
        try:
            yield b
        finally:
            b.close()
