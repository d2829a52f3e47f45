"""Evaluation: metric definitions, metrics.json per variant, plots, model card, and the safety gate's exit code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from mycolens.catalogue import load_catalogue
from mycolens.evaluation.card import lookalike_pairs
from mycolens.inference.onnx_model import ModelRefused, verify_model_dir
from mycolens.verdict import metrics as M
from tests.conftest import OOD_SET_NAMES

if TYPE_CHECKING:
    from tests.conftest_export import Workspace

pytest_plugins = ["tests.conftest_export"]  # fixtures: workspace, exported

CAT = load_catalogue()
DANGER = CAT.dangerous_mask
VARIANT_KEYS = {
    "accuracy",
    "macro_f1",
    "ece",
    "ece_uncalibrated",
    "temperature",
    "unsafe_edible_rate",
    "poison_cost",
    "abstain_rate",
    "ood_abstain_rate",
    "params",
    "flops",
    "file_bytes",
    "latency_ms_batch1",
    "latency_ms_batch32",
}
SUMMARY_KEYS = {"accuracy", "macro_f1", "ece", "unsafe_edible_rate", "poison_cost", "abstain_rate", "ood_abstain_rate"}
PNG = b"\x89PNG\r\n\x1a\n"


# --- metric definitions on hand-made numbers ---------------------------------------------------------------------


def test_accuracy_and_macro_f1() -> None:
    y = np.array([0, 0, 1, 1, 2])
    p = np.array([0, 1, 1, 1, 0])
    assert M.accuracy(y, p) == pytest.approx(3 / 5)
    # class 0: P 1/2 R 1/2 -> 0.5; class 1: P 2/3 R 1 -> 0.8; class 2: 0; classes 3.. absent everywhere are ignored
    assert M.macro_f1(y, p, num_classes=14) == pytest.approx((0.5 + 0.8 + 0.0) / 3)


def test_ece_15_bins() -> None:
    probs = np.array([[0.95, 0.05], [0.95, 0.05], [0.6, 0.4], [0.6, 0.4]])
    labels = np.array([0, 1, 0, 0])
    # bin (0.933, 1]: conf 0.95, acc 0.5 -> 0.45; bin (0.533, 0.6]: conf 0.6, acc 1.0 -> 0.4; equal weights
    assert M.ece(probs, labels, bins=15) == pytest.approx((0.45 + 0.4) / 2)
    assert M.ece(np.eye(3), np.arange(3)) == pytest.approx(0.0)


def test_unsafe_edible_rate_counts_dangerous_images_called_edible() -> None:
    jack, chanterelle, death_cap = (
        CAT.index("omphalotus_illudens"),
        CAT.index("cantharellus_cibarius"),
        CAT.index("amanita_phalloides"),
    )
    labels = np.array([jack, jack, death_cap, chanterelle, chanterelle])
    verdicts = ["edible", "uncertain", "do_not_eat", "edible", "edible"]
    assert M.unsafe_edible_rate(verdicts, labels, DANGER) == pytest.approx(1 / 3)
    assert M.unsafe_edible_rate(["edible"], np.array([chanterelle]), DANGER) == 0.0  # no dangerous image at all


def test_poison_cost_is_fungiclef() -> None:
    jack, chanterelle, parasol = (
        CAT.index("omphalotus_illudens"),
        CAT.index("cantharellus_cibarius"),
        CAT.index("macrolepiota_procera"),
    )
    labels = np.array([jack, chanterelle, chanterelle, parasol])
    preds = np.array(
        [chanterelle, jack, parasol, parasol]
    )  # 1 poisonous->edible, 1 edible->poisonous, 1 edible->edible
    assert M.poison_cost(labels, preds, DANGER) == pytest.approx((100 + 1) / 4)


def test_abstain_rates_and_dangerous_cells() -> None:
    assert M.abstain_rate(["uncertain", "edible", "do_not_eat", "uncertain"]) == 0.5
    assert M.ood_abstain_rate(["uncertain", "do_not_eat"]) == 0.5
    mask = M.dangerous_confusions(CAT.num_classes, DANGER)
    assert mask[CAT.index("amanita_phalloides"), CAT.index("russula_virescens")]
    assert not mask[CAT.index("russula_virescens"), CAT.index("amanita_phalloides")]
    assert not mask.diagonal().any()


# --- the evaluation stage ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def evaluated(workspace: Workspace, exported: dict) -> dict:
    """`python scripts/evaluate.py` over all four variants (the teacher stands in for the compressed checkpoint)."""
    proc = workspace.run(
        "evaluate.py",
        f"evaluate.sources.compressed={workspace.best}",
        "evaluate.latency.repeats=2",
        "evaluate.latency.warmup=1",
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {"proc": proc, "metrics": json.loads((workspace.reports / "metrics.json").read_text())}


def test_metrics_json_per_variant_and_summary(workspace: Workspace, evaluated: dict) -> None:
    m = evaluated["metrics"]
    assert set(m["variants"]) == {"teacher", "compressed", "onnx_fp32", "onnx_int8"}
    for name, v in m["variants"].items():
        assert set(v) >= VARIANT_KEYS, name
        assert 0 <= v["accuracy"] <= 1 and 0 <= v["unsafe_edible_rate"] <= 1 and 0 <= v["ood_abstain_rate"] <= 1
        assert v["latency_ms_batch1"] > 0 and v["latency_ms_batch32"] > 0 and v["file_bytes"] > 0
    assert m["served"] == "onnx_int8"
    for key in SUMMARY_KEYS:
        assert m[key] == m["variants"]["onnx_int8"][key]
    # the ONNX variants report the parameters and FLOPs of the checkpoint they came from, and are smaller files
    onnx_fp32, teacher = m["variants"]["onnx_fp32"], m["variants"]["teacher"]
    assert (onnx_fp32["params"], onnx_fp32["flops"]) == (teacher["params"], teacher["flops"])
    assert m["variants"]["onnx_int8"]["file_bytes"] < onnx_fp32["file_bytes"]
    assert onnx_fp32["accuracy"] == pytest.approx(teacher["accuracy"])
    assert m["safety_gate"]["variant"] == "onnx_int8" and m["classes"] == CAT.ids
    # serving reports the same figures from the model folder
    assert json.loads((workspace.export_dir / "metrics.json").read_text()) == m
    out = evaluated["proc"].stdout
    for name in ("teacher", "compressed", "onnx_fp32", "onnx_int8*", "unsafe_edible_rate", "ood_abstain_rate", "ece"):
        assert name in out


def test_abstention_is_reported_per_named_ood_set(workspace: Workspace, evaluated: dict) -> None:
    m = evaluated["metrics"]
    names = OOD_SET_NAMES
    assert set(m["ood_sets"]) == names and m["ood_sets"]["real_digits"]["images"] == 1797
    for name, v in m["variants"].items():
        per = v["ood_sets"]
        assert set(per) == names, name
        for s in per.values():
            assert 0 <= s["abstain_rate"] <= 1 and s["edible"] >= 0
            assert sum(s["reasons"].values()) == round(s["abstain_rate"] * s["images"])
        assert v["ood_abstain_rate_min"] == min(s["abstain_rate"] for s in per.values())
        assert v["ood_edible"] == sum(s["edible"] for s in per.values())
        assert 0 <= v["aurc"] <= 1
    # a greyscale digit is never answered as a species: the photo check says why
    assert m["variants"]["onnx_int8"]["ood_sets"]["real_digits"]["reasons"].get("greyscale") == 1797
    assert m["fitted_on"]["input_check_bounds"] == "train" and "test" not in m["fitted_on"].values()
    out = evaluated["proc"].stdout
    assert "ood set real_photos:" in out and "aurc" in out


def test_risk_coverage_orders_by_confidence() -> None:
    from mycolens.evaluation.evaluate import risk_coverage

    coverage, risk, aurc = risk_coverage(np.array([0.9, 0.8, 0.7, 0.6]), np.array([True, True, False, False]))
    assert list(coverage) == [0.25, 0.5, 0.75, 1.0]
    assert list(risk) == pytest.approx([0.0, 0.0, 1 / 3, 0.5])
    assert aurc == pytest.approx((0 + 0 + 1 / 3 + 0.5) / 4)
    _, _, worse = risk_coverage(np.array([0.6, 0.7, 0.8, 0.9]), np.array([True, True, False, False]))
    assert worse > aurc  # confident mistakes cost more area


def test_plots_are_png(workspace: Workspace, evaluated: dict) -> None:
    for name in ("confusion_matrix.png", "reliability.png", "risk_coverage.png"):
        data = (workspace.reports / "plots" / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 5000


def test_model_card_mentions_every_lookalike_pair(workspace: Workspace, evaluated: dict) -> None:
    card = (workspace.reports / "model_card.md").read_text()
    assert "Not advice" in card and "Intended use" in card
    pairs = lookalike_pairs(CAT)
    assert len(pairs) >= 5
    for a, b in pairs:
        line = f"**{CAT[a].common_name}** ({CAT[a].edibility}) vs **{CAT[b].common_name}** ({CAT[b].edibility})"
        assert line in card
        assert CAT[a].note in card and CAT[b].note in card
    for variant in evaluated["metrics"]["variants"]:
        assert variant in card
    assert f"{evaluated['metrics']['unsafe_edible_rate']:.4f}" in card


def test_missing_variant_is_one_clear_line(workspace: Workspace, tmp_path: Path) -> None:
    proc = workspace.run(
        "evaluate.py", f"evaluate.sources.compressed={tmp_path / 'nope.ckpt'}", f"paths.reports_dir={tmp_path}"
    )
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "compressed" in err[0] and "nope.ckpt not found" in err[0]
    assert "evaluate.variants=[teacher,onnx_fp32,onnx_int8]" in err[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "metrics.json").exists()


def test_safety_gate_fails_on_a_model_that_calls_poisonous_edible(
    workspace: Workspace, exported: dict, tmp_path: Path
) -> None:
    unsafe = workspace.unsafe_checkpoint(tmp_path / "models" / "unsafe.ckpt")
    proc = workspace.run("export.py", f"ckpt_path={unsafe}", root=tmp_path)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: safety gate failed") and "unsafe_edible_rate" in err[0]
    folder = tmp_path / "models" / "export"
    meta = json.loads((folder / "model.json").read_text())
    assert meta["safety_gate"]["passed"] is False
    assert min(meta["safety_gate"]["unsafe_edible_rate"].values()) > meta["safety_gate"]["limit"]
    for variant in ("fp32", "int8"):
        with pytest.raises(ModelRefused, match="safety gate"):
            verify_model_dir(folder, variant)

    # evaluation measures the refused model anyway, writes its reports, and fails the same gate
    proc = workspace.run("evaluate.py", "evaluate.variants=[onnx_int8]", "evaluate.latency.repeats=1", root=tmp_path)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: safety gate failed") and "onnx_int8" in err[0]
    m = json.loads((tmp_path / "reports" / "metrics.json").read_text())
    assert m["safety_gate"]["passed"] is False and m["unsafe_edible_rate"] > m["safety_gate"]["limit"]
    assert m["poison_cost"] > 10  # nearly every poisonous image is predicted as the edible field mushroom


def test_evaluate_one_checkpoint(workspace: Workspace, tmp_path: Path) -> None:
    ckpt = tmp_path / "best.ckpt"
    shutil.copyfile(workspace.best, ckpt)
    proc = workspace.run("evaluate.py", f"ckpt_path={ckpt}", root=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "test/accuracy:" in proc.stdout and "test/unsafe_edible_rate:" in proc.stdout
    # above data.cache_max_gb the test split is streamed by the data module: the same figures
    (tmp_path / "streamed").mkdir()
    streamed = workspace.run("evaluate.py", f"ckpt_path={ckpt}", "data.cache_max_gb=0", root=tmp_path / "streamed")
    assert streamed.returncode == 0, streamed.stderr[-2000:]
    assert "data input: streaming from the shards" in streamed.stdout + streamed.stderr

    def figures(out: str) -> list[str]:
        return [line for line in out.splitlines() if line.startswith("test/")]

    assert figures(streamed.stdout) == figures(proc.stdout) != []


def test_splits_decoded_on_access_give_the_same_metrics(workspace: Workspace, evaluated: dict, tmp_path: Path) -> None:
    """Above data.cache_max_gb the evaluation decodes each split a batch at a time (LazyImages): same figures."""
    proc = workspace.run(
        "evaluate.py",
        f"evaluate.sources.compressed={workspace.best}",
        "evaluate.latency.repeats=1",
        "evaluate.latency.warmup=0",
        "data.cache_max_gb=0",
        f"evaluate.output_dir={tmp_path}",
        f"evaluate.plots_dir={tmp_path / 'plots'}",
        f"evaluate.model_card={tmp_path / 'model_card.md'}",
        "evaluate.model_metrics=null",  # leave the shared model folder alone
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "test inputs: decoded on access" in proc.stdout + proc.stderr
    lazy = json.loads((tmp_path / "metrics.json").read_text())
    for name, v in evaluated["metrics"]["variants"].items():
        for key in ("accuracy", "ece", "abstain_rate", "unsafe_edible_rate", "temperature", "feature_threshold"):
            assert lazy["variants"][name][key] == v[key], (name, key)
