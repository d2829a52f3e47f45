"""Teachers for the compression tests: a Lightning-trained tiny small_cnn, and instant random-weight checkpoints."""

from __future__ import annotations

from pathlib import Path

import torch

from mycolens.catalogue import load_catalogue
from mycolens.models.module import MushroomClassifier
from tests.conftest import compose, run_overrides

MEAN, STD = [0.5, 0.45, 0.4], [0.25, 0.25, 0.25]


def random_classifier(backbone: str = "small_cnn", image_size: int = 32, catalogue: dict | None = None, seed: int = 0):
    """A MushroomClassifier with random weights and perturbed BatchNorm statistics (so outputs depend on them)."""
    torch.manual_seed(seed)
    model = MushroomClassifier(
        catalogue or load_catalogue().to_dict(), backbone=backbone, image_size=image_size, mean=MEAN, std=STD
    )
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def save_teacher(model: MushroomClassifier, path: Path) -> Path:
    """A minimal Lightning-style teacher checkpoint ({state_dict, hyper_parameters}), as training publishes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, path)
    return path


def train_tiny_teacher(tmp: Path, shards: Path) -> Path:
    """models/best.ckpt of a small_cnn trained by scripts/train.py's code path (debug=limit, 2 epochs) at 32 px."""
    from mycolens.training.run import train

    train(compose([*run_overrides(tmp, shards), "debug=limit", "trainer.max_epochs=2"], tmp))
    return tmp / "models" / "best.ckpt"
