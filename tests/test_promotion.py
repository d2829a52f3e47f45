"""The promotion gate: on a frozen evaluation set, a candidate trained on a poisoned batch (a deadly species
relabelled as an edible one, in every split, so its own test split agrees with the poison) is refused and the
report names the species; an unchanged candidate passes and records the frozen set's hash in model.json."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mycolens.monitoring.promotion import (
    GateLimits,
    PromotionRefused,
    compare_models,
    freeze_eval_set,
    frozen_photo_hashes,
    gate_candidate,
    model_scores,
)
from tests.conftest import TINY_DATA, compose, make_shards, run_script

LIMITS = GateLimits(max_recall_drop=0.05, max_dangerous_edible_increase=0, max_ood_abstain_drop=0.01)
EDIBLE_TARGET = "agaricus_campestris"  # what the poisoner claims the deadly photos are


def scores(recall: dict[str, float], edible: dict[str, int], ood: float, dangerous: tuple[str, ...] = ()) -> dict:
    species = {
        s: {"photos": 10, "recall": r, "edible_calls": edible.get(s, 0), "dangerous": s in dangerous}
        for s, r in recall.items()
    }
    return {"species": species, "ood_abstain_rate": ood, "ood_images": 100}


def test_compare_models_names_each_reason():
    current = scores({"a": 0.9, "b": 0.8, "c": 0.7}, {}, 0.98, dangerous=("c",))
    same = compare_models(current, scores({"a": 0.86, "b": 0.8, "c": 0.7}, {}, 0.975, ("c",)), LIMITS)
    assert same["passed"] and same["reasons"] == [] and same["moved"] == ["a"]  # 4 points, 0.5 OOD points: within
    bad = compare_models(current, scores({"a": 0.9, "b": 0.6, "c": 0.7}, {"c": 1}, 0.95, ("c",)), LIMITS)
    assert not bad["passed"]
    assert any(r.startswith("b: recall 0.800 -> 0.600") for r in bad["reasons"])
    assert any(r.startswith("c (poisonous/deadly): called edible 1 times, before 0") for r in bad["reasons"])
    assert any(r.startswith("OOD abstention 0.980 -> 0.950") for r in bad["reasons"])
    assert bad["species"]["b"]["recall_drop"] == pytest.approx(0.2)
    edible_only = compare_models(current, scores({"a": 0.9, "b": 0.8, "c": 0.7}, {"a": 5}, 0.98, ("c",)), LIMITS)
    assert edible_only["passed"]  # an edible species called edible more often is no safety matter


def test_a_drop_exactly_at_the_limit_is_within_it():
    """3 of 60 photos is a 5-point drop, which float subtraction makes 0.0500000001: not a reason to refuse."""
    current = scores({"a": 58 / 60}, {}, 297 / 300)
    at_limit = compare_models(current, scores({"a": 55 / 60}, {}, 294 / 300), LIMITS)
    assert at_limit["passed"], at_limit["reasons"]
    beyond = compare_models(current, scores({"a": 54 / 60}, {}, 293 / 300), LIMITS)
    assert [r.split(":")[0].split(" ")[0] for r in beyond["reasons"]] == ["a", "OOD"]


def poisoned_shards(src: Path, out: Path, deadly: str) -> Path:
    """`src` with every photo of `deadly` relabelled as EDIBLE_TARGET in train, val and test (as approved claims
    that went through a retrain would be): the poisoned model's own test split agrees with the poison."""
    from mycolens.catalogue import load_catalogue
    from mycolens.data.shards import SCHEMA, SPLITS, read_manifest, read_split, write_shards

    catalogue = load_catalogue()
    manifest = read_manifest(src)
    rows = {}
    for split in SPLITS:
        table = read_split(src, split).to_pylist()
        for r in table:
            if r["species"] == deadly:
                r["species"], r["label"] = EDIBLE_TARGET, catalogue.index(EDIBLE_TARGET)
        rows[split] = [{k: r[k] for k in SCHEMA.names} for r in table]
    write_shards(out, rows, catalogue, params=manifest["params"], mean_std=(manifest["mean"], manifest["std"]))
    return out


def train_and_export(root: Path, shards: Path, ood_sets: Path) -> Path:
    """A small_cnn trained for 6 epochs on `shards` with the real training code, exported by scripts/export.py."""
    from mycolens.training.run import train

    paths = [f"paths.shards_dir={shards}", f"paths.ood_sets_dir={ood_sets}", f"paths.models_dir={root / 'models'}"]
    paths += [f"paths.log_dir={root / 'logs'}", f"paths.reports_dir={root / 'reports'}"]
    train(compose([*TINY_DATA, *paths, "trainer.max_epochs=6"], root))
    proc = run_script("export.py", *TINY_DATA, *paths, f"ckpt_path={root / 'models' / 'best.ckpt'}")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return root / "models" / "export"


@pytest.mark.slow
def test_poisoned_candidate_is_refused_on_the_frozen_set(tmp_path: Path, tiny_ood_sets: Path):
    from mycolens.catalogue import load_catalogue
    from mycolens.inference.onnx_model import OnnxClassifier

    shards = make_shards(tmp_path / "shards", specimens_per_class=8, photos_per_specimen=3, ood_images=30, seed=5)
    frozen = freeze_eval_set(shards, tmp_path / "frozen")
    assert frozen["images"] == {"test": json.loads((shards / "manifest.json").read_text())["splits"]["test"]["images"],
                                "ood": 30}  # fmt: skip
    again = freeze_eval_set(tmp_path / "nowhere", tmp_path / "frozen")  # frozen once: the source is not read again
    assert again["sha256"] == frozen["sha256"]
    assert len(frozen_photo_hashes(tmp_path / "frozen")) == sum(frozen["images"].values())

    served = train_and_export(tmp_path / "current", shards, tiny_ood_sets)
    served_json = (served / "model.json").read_bytes()
    unchanged = shutil.copytree(served, tmp_path / "unchanged")
    report = gate_candidate(unchanged, served, frozen, "fp32", LIMITS)
    assert report["passed"] and report["moved"] == []
    assert json.loads((unchanged / "model.json").read_text())["promotion"]["frozen_eval"]["sha256"] == frozen["sha256"]

    # poison the deadly species the served model recognises best (the attack that costs a life)
    current = model_scores(OnnxClassifier.load(served, "fp32"), frozen["path"])
    dangerous = [s.id for s in load_catalogue().species if s.dangerous]
    deadly = max(dangerous, key=lambda s: current["species"][s]["recall"])
    assert current["species"][deadly]["recall"] >= 0.5, current["species"]

    candidate = train_and_export(
        tmp_path / "poisoned", poisoned_shards(shards, tmp_path / "pshards", deadly), tiny_ood_sets
    )
    assert json.loads((candidate / "model.json").read_text())["safety_gate"]["passed"]  # its own gate sees nothing
    with pytest.raises(PromotionRefused) as refused:
        gate_candidate(candidate, served, frozen, "fp32", LIMITS)
    report = refused.value.report
    assert deadly in report["moved"] and any(r.startswith(f"{deadly}: recall") for r in report["reasons"])
    assert report["species"][deadly]["recall_after"] < report["species"][deadly]["recall_before"] - 0.05
    assert deadly in str(refused.value)
    assert (served / "model.json").read_bytes() == served_json  # the served model is untouched
    assert json.loads((candidate / "model.json").read_text())["promotion"]["passed"] is False
