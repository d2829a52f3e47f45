"""Abstention on inputs unlike the training data: photo checks, the feature score, the rule's reasons, outlier
families, the named OOD test sets, the exported score heads and the safety gate that reads them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
import pytest
import torch

from mycolens.data.outliers import FAMILIES, render_outliers
from mycolens.inference.preprocess import normalize
from mycolens.ood.input_stats import STAT_NAMES, InputStats
from mycolens.ood.scored import MahalanobisScore, build_scored_net, scored_outputs, split_head
from mycolens.verdict.rule import InputCheck, VerdictRule, judge
from tests.conftest import OOD_SET_NAMES, ROOT

if TYPE_CHECKING:
    from tests.conftest_export import Workspace

pytest_plugins = ["tests.conftest_export"]  # fixtures: workspace, exported

MEAN, STD = [0.3, 0.3, 0.2], [0.15, 0.15, 0.13]
DANGER = [False, True, False]


def stats_of(images: np.ndarray) -> dict[str, np.ndarray]:
    x = torch.from_numpy(normalize(images, MEAN, STD))
    out = InputStats(MEAN, STD)(x).numpy()
    return {name: out[:, i] for i, name in enumerate(STAT_NAMES)}


def synthetic_photos(n: int = 6) -> np.ndarray:
    from mycolens.catalogue import load_catalogue
    from mycolens.data import synth

    cat = load_catalogue()
    rng = np.random.default_rng(0)
    return np.stack(
        [
            synth.render_specimen_photos(cat.species[i].appearance, cat.species[i].id, rng, 1, 64, 1.0)[0]
            for i in range(n)
        ]
    )


def test_photo_statistics_tell_photos_from_grey_flat_and_periodic_images() -> None:
    photos = synthetic_photos()
    grey = render_outliers(["synthetic"], 6, 64, 1, greyscale_share=1.0)
    flat = np.full((2, 64, 64, 3), (120, 90, 60), np.uint8)
    periodic = render_outliers(["periodic"], 6, 64, 2)
    p, g, f, q = stats_of(photos), stats_of(grey), stats_of(flat), stats_of(periodic)
    assert g["colourfulness"].max() < 0.01 < p["colourfulness"].min()
    assert f["flat_fraction"].min() > 0.99 and p["flat_fraction"].max() < 0.5
    assert np.median(q["periodicity"]) > 3 * max(np.median(p["periodicity"]), 0.05)
    assert np.all((p["luminance"] > 0) & (p["luminance"] < 1)) and f["sharpness"].max() < 1e-4


def test_judge_names_the_first_reason_and_flags_before_the_species() -> None:
    checks = (
        InputCheck(0, "colourfulness", "min", 0.05, "greyscale"),
        InputCheck(1, "flat_fraction", "max", 0.5, "not_a_photo"),
    )
    rule = VerdictRule(0.9, 0.02, 0.5, ood_threshold=0.0, feature_threshold=1.0, input_checks=checks)
    confident_edible = np.array([0.99, 0.0, 0.01])
    probs = np.stack([confident_edible] * 5)
    stats = np.array([[0.2, 0.1], [0.01, 0.9], [0.2, 0.9], [0.2, 0.1], [0.2, 0.1]])
    feature = np.array([0.5, 0.5, 0.5, 2.0, 0.5])
    energy = np.array([-1.0, -1.0, -1.0, -1.0, 1.0])
    got = judge(probs, DANGER, rule, energy, feature, stats)
    assert got == [
        ("edible", None),
        ("uncertain", "greyscale"),  # both checks fail: the first configured one is named
        ("uncertain", "not_a_photo"),
        ("uncertain", "unlike_training_data"),  # feature score
        ("uncertain", "unlike_training_data"),  # energy
    ]
    assert judge(np.array([[0.6, 0.0, 0.4]]), DANGER, rule) == [("uncertain", "low_confidence")]
    assert VerdictRule.from_dict(rule.to_dict()) == rule
    old = {"edible_min_confidence": 0.9, "poison_max": 0.02, "do_not_eat_min": 0.5, "ood_threshold": 0.0}
    assert VerdictRule.from_dict(old).input_checks == () and VerdictRule.from_dict(old).feature_threshold == np.inf


def test_graph_mahalanobis_equals_pytorch_ood() -> None:
    from pytorch_ood.detector import Mahalanobis

    g = torch.Generator().manual_seed(0)
    z = torch.randn(300, 8, generator=g) + torch.arange(3).repeat_interleave(100)[:, None]
    y = torch.arange(3).repeat_interleave(100)
    det = Mahalanobis(None).fit_features(z, y)
    q = torch.randn(20, 8, generator=g) * 3
    ours = MahalanobisScore(det.mu, det.precision, normalize=False)(q)
    # pytorch-ood returns the negated Gaussian log-density term; higher = more out-of-distribution in both
    assert torch.allclose(ours, det.predict_features(q).float(), rtol=1e-4)


def test_split_head_keeps_the_logits_and_exposes_features() -> None:
    from mycolens.models.backbones import SmallCNN

    net = SmallCNN(5, channels=(4, 8)).eval()
    body, head = split_head(net)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert body(x).shape == (3, 8) and torch.allclose(head(body(x)), net(x))
    assert isinstance(net.classifier, torch.nn.Linear)  # the original is untouched


def test_scored_net_exports_three_outputs_and_int8_keeps_score_heads_fp32(tmp_path: Path) -> None:
    from mycolens.export.onnx_export import export_onnx, onnx_outputs, session
    from mycolens.export.quantize import quantize_int8, resolve_settings, score_nodes
    from mycolens.models.backbones import SmallCNN
    from mycolens.ood.scored import OUTPUT_NAMES

    torch.manual_seed(0)
    net = SmallCNN(4, channels=(8, 16)).eval()
    images = normalize(synthetic_photos(8)[:, ::2, ::2], MEAN, STD)  # 32 px
    scored = build_scored_net(net, images, np.arange(8) % 4, MEAN, STD, True, 0.01, 8)
    export_onnx(scored, tmp_path / "m.onnx", 32, 20, OUTPUT_NAMES)
    ref, got = scored_outputs(scored, images), onnx_outputs(session(tmp_path / "m.onnx"), images)
    assert list(got) == list(OUTPUT_NAMES)
    for name in OUTPUT_NAMES:
        assert np.allclose(ref[name], got[name], rtol=1e-3, atol=1e-4), name
    heads = score_nodes(tmp_path / "m.onnx")
    assert {"MatMul", "Conv"} <= {n.op_type for n in onnx.load(str(tmp_path / "m.onnx")).graph.node if n.name in heads}
    quantize_int8(tmp_path / "m.onnx", tmp_path / "q.onnx", images, resolve_settings(calibration_images=8))
    graph = onnx.load(str(tmp_path / "q.onnx")).graph
    int8_weights = {i.name for i in graph.initializer if i.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)}
    dq_of_weight = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in int8_weights}
    head_nodes = [n for n in graph.node if n.name in heads]
    assert head_nodes and not any(set(n.input) & dq_of_weight for n in head_nodes)  # score weights stay fp32
    assert dq_of_weight  # while the classifier's weights are int8


def test_outlier_families_are_seeded_and_named() -> None:
    a = render_outliers(list(FAMILIES), 8, 32, 5, greyscale_share=0.25, jitter_share=0.25)
    assert np.array_equal(a, render_outliers(list(FAMILIES), 8, 32, 5, greyscale_share=0.25, jitter_share=0.25))
    assert not np.array_equal(a, render_outliers(list(FAMILIES), 8, 32, 6, greyscale_share=0.25, jitter_share=0.25))
    assert a.shape == (8, 32, 32, 3) and a.dtype == np.uint8
    with pytest.raises(ValueError, match="unknown outlier families"):
        render_outliers(["mushrooms"], 1, 32, 0)


def test_named_ood_sets_are_real_files_recorded_as_test_only(tiny_ood_sets: Path) -> None:
    from mycolens.data.ood_sets import load_ood_sets

    index = json.loads((tiny_ood_sets / "index.json").read_text())
    assert "test only" in index["use"]
    sets = index["sets"]
    assert set(sets) == OOD_SET_NAMES - {"synthetic"}
    assert sets["real_photos"]["images"] >= 20 and sets["real_digits"]["images"] == 1797
    for name, s in sets.items():
        assert len(list((tiny_ood_sets / name).glob("*.png"))) == s["images"]
    loaded = load_ood_sets(tiny_ood_sets, 32, MEAN, STD)
    assert loaded["real_faces"].shape == (200, 3, 32, 32) and loaded["real_faces"].dtype == np.float32


def test_a_held_out_family_that_is_also_exposed_is_refused(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "ood_sets.py"), f"paths.ood_sets_dir={tmp_path / 'o'}",
         "data.outliers.families=[synthetic,fractals]"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "fractals" in err[0] and "never be exposed" in err[0]
    assert not (tmp_path / "o").exists()


def test_export_gate_refuses_a_model_under_the_ood_abstention_limit(
    workspace: Workspace, exported: dict, tmp_path: Path
) -> None:
    from mycolens.inference.onnx_model import ModelRefused, verify_model_dir

    # no model abstains on more than every image: a limit above 1 must refuse, and say which sets
    proc = workspace.run(
        "export.py", f"ckpt_path={workspace.best}", "export.safety_gate.min_ood_abstain=1.01", root=tmp_path
    )
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: safety gate failed") and "real_photos" in err[0]
    folder = tmp_path / "models" / "export"
    gate = json.loads((folder / "model.json").read_text())["safety_gate"]
    assert gate["passed"] is False and "int8/real_digits" in " ".join(gate["ood_below_limit"])
    with pytest.raises(ModelRefused, match="safety gate"):
        verify_model_dir(folder, "int8")


def test_exported_model_abstains_with_a_reason_on_greyscale_photos(exported: dict) -> None:
    from mycolens.inference.onnx_model import OnnxClassifier

    clf = OnnxClassifier.load(exported["dir"], "int8")
    pre = clf.preprocessing
    grey = render_outliers(["synthetic"], 4, pre["image_size"], 3, greyscale_share=1.0)
    answers = clf.answer(normalize(grey, pre["mean"], pre["std"]))
    assert [(a["verdict"], a["abstain_reason"]) for a in answers] == [("uncertain", "greyscale")] * 4
