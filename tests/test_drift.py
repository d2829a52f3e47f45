"""Drift monitoring: in-distribution photos stay quiet; darkened or colour-cast photos flag the right features."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image
from prometheus_client import CollectorRegistry, generate_latest

from mycolens.catalogue import load_catalogue
from mycolens.data.shards import read_split
from mycolens.inference.onnx_model import OnnxClassifier
from mycolens.inference.preprocess import decode_image, normalize, resize_center_crop
from mycolens.monitoring.drift import DriftMonitor
from mycolens.monitoring.offline import folder_drift, format_report
from mycolens.monitoring.reference import ReferenceError, load_reference, write_reference
from mycolens.monitoring.stats import bin_counts, bin_edges, ks_statistic, psi
from tests.conftest import ROOT, compose
from tests.serve_fixtures import make_model_dir, small_shards

PYTHON = str(ROOT / ".venv" / "bin" / "python")
SIZE_FEATURES = {"log_pixels", "aspect_ratio"}
LIGHT_FEATURES = {"brightness", "red", "green", "blue"}


def darken(a: np.ndarray) -> np.ndarray:
    return (a.astype(np.float64) * 0.5).astype(np.uint8)


def warm_cast(a: np.ndarray) -> np.ndarray:
    """A white-balance error: more red, much less blue; brightness about the same."""
    return np.clip(a * np.array([1.15, 1.0, 0.7]), 0, 255).astype(np.uint8)


def swap_red_blue(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a[..., ::-1])


@dataclass
class DriftData:
    shards: Path
    model_dir: Path
    reference: Path
    classifier: OnnxClassifier
    photos: list[Image.Image]  # the test split: same distribution as train, never seen by the reference

    def observe(self, monitor: DriftMonitor, transform: Callable[[np.ndarray], np.ndarray] = lambda a: a) -> None:
        """What the server does per photo: crop, model probabilities, then observe."""
        pre = self.classifier.preprocessing
        crops = [transform(resize_center_crop(p, pre["image_size"])) for p in self.photos]
        probs = self.classifier.probabilities(
            self.classifier.logits(normalize(np.stack(crops), pre["mean"], pre["std"]))
        )
        for photo, crop, p in zip(self.photos, crops, probs, strict=True):
            monitor.observe(crop, p, original_size=photo.size)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> DriftData:
    """Synthetic shards (504 train, 252 val, 252 test photos at 32 px), a tiny served model and its reference.json."""
    tmp = tmp_path_factory.mktemp("drift")
    small_shards(tmp / "shards")
    model_dir = make_model_dir(tmp)
    classifier = OnnxClassifier.load(model_dir, "fp32")
    reference = write_reference(tmp / "shards", model_dir / "reference.json", classifier=classifier)
    photos = [decode_image(b.as_py()) for b in read_split(tmp / "shards", "test", ["image"]).column("image")]
    return DriftData(tmp / "shards", model_dir, reference, classifier, photos)


@pytest.fixture
def settings(tmp_path: Path) -> dict:
    """The real `monitoring` config, with a window that holds the 252 test photos."""
    cfg = compose(["monitoring.window=300"], tmp_path)
    return OmegaConf.to_container(cfg.monitoring, resolve=True)


# ------------------------------------------------------------------ statistics


def test_psi_and_ks_are_zero_for_the_same_sample_and_grow_with_a_shift():
    rng = np.random.default_rng(0)
    ref = rng.normal(0, 1, 2000)
    edges = bin_edges(ref, 10)
    same = psi(bin_counts(ref, edges), bin_counts(ref, edges))
    shifted = psi(bin_counts(ref, edges), bin_counts(ref + 1.0, edges))
    assert same < 1e-3 < 0.2 < shifted
    assert ks_statistic(ref, ref) == 0.0 and ks_statistic(ref, ref + 1.0) > 0.3


def test_bins_give_an_atom_its_own_bin():
    ref = np.full(500, 64.0)  # every training photo has the same size
    edges = bin_edges(ref, 10)
    assert bin_counts(ref, edges).tolist() == [0, 500, 0]
    assert psi(bin_counts(ref, edges), bin_counts(np.full(100, 4000.0), edges)) > 1.0


# ------------------------------------------------------------------ reference


def test_reference_holds_train_image_stats_and_val_predictions(data):
    ref = load_reference(data.reference)
    assert ref["image_size"] == 32 and ref["classes"] == load_catalogue().ids
    assert ref["source"]["train_images"] == 504 and ref["source"]["val_images"] == 252
    for name in ("brightness", "contrast", "saturation", "red", "green", "blue", "log_pixels", "aspect_ratio"):
        f = ref["features"][name]
        assert f["split"] == "train" and sum(f["counts"]) == 504 and len(f["counts"]) == len(f["edges"]) + 1
    assert ref["features"]["confidence"]["split"] == "val"
    assert sum(ref["features"]["predicted_class"]["counts"]) == 252
    assert ref["model"]["version"] == data.classifier.meta["version"]


def test_reference_is_deterministic(data, tmp_path):
    again = write_reference(data.shards, tmp_path / "reference.json", classifier=data.classifier)
    assert again.read_bytes() == data.reference.read_bytes()


def test_missing_or_foreign_reference_is_a_clear_error(tmp_path):
    with pytest.raises(ReferenceError, match="write_reference"):
        load_reference(tmp_path / "nope.json")
    (tmp_path / "other.json").write_text('{"format": "something-else"}')
    with pytest.raises(ReferenceError, match="mycolens-reference/1"):
        load_reference(tmp_path / "other.json")


# ------------------------------------------------------------------ drift


@pytest.mark.parametrize("method", ["psi", "ks"])
def test_in_distribution_photos_do_not_drift(data, settings, method):
    monitor = DriftMonitor.from_settings(data.reference, {**settings, "method": method})
    data.observe(monitor)
    report = monitor.report()
    assert report["status"] == "ok" and report["window_size"] == 252
    assert report["drifted"] is False, {k: v["score"] for k, v in report["features"].items()}
    assert set(report["features"]) == set(settings["features"])
    for entry in report["features"].values():
        assert entry["samples"] == 252 and entry["score"] is not None and entry["threshold"] > 0


@pytest.mark.parametrize("method", ["psi", "ks"])
def test_darkened_photos_drift_in_light_not_in_size_or_saturation(data, settings, method):
    monitor = DriftMonitor.from_settings(data.reference, {**settings, "method": method})
    data.observe(monitor, darken)
    report = monitor.report()
    drifted = set(report["drifted_features"])
    assert report["drifted"] and drifted >= LIGHT_FEATURES, drifted
    assert not drifted & (SIZE_FEATURES | {"saturation"}), drifted
    assert report["features"]["brightness"]["live_mean"] < 0.6 * report["features"]["brightness"]["reference_mean"]


@pytest.mark.parametrize("method", ["psi", "ks"])
def test_colour_cast_drifts_in_colour_not_in_brightness_or_size(data, settings, method):
    monitor = DriftMonitor.from_settings(data.reference, {**settings, "method": method})
    data.observe(monitor, warm_cast)
    drifted = set(monitor.report()["drifted_features"])
    assert {"blue", "saturation"} <= drifted, drifted
    assert not drifted & (SIZE_FEATURES | {"brightness", "green"}), drifted

    monitor.reset()
    data.observe(monitor, swap_red_blue)
    drifted = set(monitor.report()["drifted_features"])
    assert {"red", "blue"} <= drifted and not drifted & (SIZE_FEATURES | {"green", "saturation"}), drifted


def test_nothing_is_flagged_before_min_samples_and_the_window_rolls(data, settings):
    monitor = DriftMonitor.from_settings(data.reference, {**settings, "window": 200, "min_samples": 100})
    dark = DriftData(data.shards, data.model_dir, data.reference, data.classifier, data.photos[:60])
    dark.observe(monitor, darken)
    report = monitor.report()
    assert report["status"] == "warming_up" and report["window_size"] == 60 and not report["drifted"]
    assert report["features"]["brightness"]["score"] > report["features"]["brightness"]["threshold"]

    data.observe(monitor, darken)  # 252 more: the window keeps the last 200
    assert monitor.report()["window_size"] == 200 and monitor.report()["drifted"]
    data.observe(monitor)  # in-distribution photos push the dark ones out
    assert not monitor.report()["drifted"]


def test_unknown_size_leaves_size_features_out(data, settings):
    monitor = DriftMonitor.from_settings(data.reference, settings)
    crop = resize_center_crop(data.photos[0], 32)
    monitor.observe(crop, None)
    features = monitor.report()["features"]
    assert features["log_pixels"]["samples"] == 0 and features["log_pixels"]["score"] is None
    assert features["brightness"]["samples"] == 1 and features["confidence"]["samples"] == 0


def test_prometheus_gauges_expose_the_report(data, settings):
    registry = CollectorRegistry()
    monitor = DriftMonitor.from_settings(data.reference, settings).register(registry)
    data.observe(monitor, darken)
    text = generate_latest(registry).decode()
    report = monitor.report()
    assert f"mycolens_drift_window_size {float(report['window_size'])}" in text
    assert 'mycolens_drift_drifted{feature="brightness"} 1.0' in text
    assert 'mycolens_drift_drifted{feature="log_pixels"} 0.0' in text
    assert f'mycolens_drift_threshold{{feature="brightness"}} {report["features"]["brightness"]["threshold"]}' in text
    assert 'mycolens_drift_score{feature="brightness"}' in text
    monitor.unregister()
    assert "mycolens_drift" not in generate_latest(registry).decode()


def test_thresholds_and_window_come_from_config(data, tmp_path):
    cfg = compose(["monitoring.window=50", "monitoring.thresholds.default=0.5", "monitoring.method=ks"], tmp_path)
    monitor = DriftMonitor.from_settings(data.reference, OmegaConf.to_container(cfg.monitoring, resolve=True))
    report = monitor.report()
    assert report["window"] == 50 and report["method"] == "ks" and report["min_samples"] == cfg.monitoring.min_samples
    assert report["features"]["brightness"]["threshold"] == 0.5
    assert report["features"]["predicted_class"]["threshold"] == cfg.monitoring.thresholds.predicted_class


# ------------------------------------------------------------------ without a server


def write_photos(folder: Path, photos: list[Image.Image], transform: Callable[[np.ndarray], np.ndarray]) -> Path:
    folder.mkdir(parents=True)
    for i, p in enumerate(photos):
        Image.fromarray(transform(np.asarray(p))).save(folder / f"p{i:03d}.png")
    return folder


def test_folder_drift_uses_the_same_code(data, settings, tmp_path):
    folder = write_photos(tmp_path / "ok", data.photos, lambda a: a)
    (folder / "notes.txt").write_text("not a photo")
    report = folder_drift(folder, load_reference(data.reference), settings, data.classifier)
    assert report["folder"]["images"] == 252 and report["folder"]["skipped"] == {"not_image": 1}
    assert report["drifted"] is False
    assert "252 images; no drift" in format_report(report)


def test_monitor_script_reports_drift_for_a_dark_folder(data, tmp_path):
    folder = write_photos(tmp_path / "dark", data.photos, darken)
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [
            PYTHON,
            "scripts/monitor.py",
            f"images={folder}",
            f"serve.model_dir={data.model_dir}",
            "serve.variant=fp32",
            "monitoring.window=300",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "252 images; DRIFTED: brightness" in proc.stdout, proc.stdout
    assert any(line.startswith("brightness") and line.endswith("DRIFT") for line in proc.stdout.splitlines())
    report = json.loads((run_dir / "drift_report.json").read_text())
    assert report["features"]["brightness"]["drifted"] and not report["features"]["log_pixels"]["drifted"]


def test_monitor_script_without_a_folder_says_how(tmp_path):
    proc = subprocess.run(
        [PYTHON, "scripts/monitor.py", f"hydra.run.dir={tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and "images=/path/to/photos" in proc.stderr
