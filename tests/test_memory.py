"""Streaming keeps memory flat: one epoch on N and on 4N images, each in its own process, peak RSS compared."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.grow import grown_shards

N = 800
# 128 px so the in-memory path would hold ~50 KB more per image (measured: +388 MB from 1200 to 4800 images, where
# streaming grew 11 MB); a 4-channel network so the epoch's time goes to reading and decoding, not to the model
OVERRIDES = [
    "data.image_size=128",
    "data.cache_max_gb=0",
    "model.backbone_kwargs.channels=[4]",
    "data.loader.batch_size=128",
]


def peak_rss_mb(shards: Path, out: Path) -> float:
    """Peak RSS (MB) of a process that trains one epoch on `shards` (tests/rss_child.py reports its own)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]), "MYCOLENS_ROOT": str(ROOT)}
    cmd = [sys.executable, str(ROOT / "tests" / "rss_child.py"), str(shards), str(out), *OVERRIDES]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["peak_rss_mb"])


@pytest.mark.slow
def test_streamed_epoch_memory_stays_flat_as_the_data_grows(tiny_shards, tmp_path):
    small = peak_rss_mb(grown_shards(tiny_shards, tmp_path / "n", N), tmp_path / "run_n")
    large = peak_rss_mb(grown_shards(tiny_shards, tmp_path / "4n", 4 * N), tmp_path / "run_4n")
    assert large - small < 150, f"peak RSS {small:.0f} MB at {N} images, {large:.0f} MB at {4 * N}"
