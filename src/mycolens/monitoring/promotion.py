"""The promotion gate: a retrained candidate replaces the served model only if, on a frozen evaluation set that
feedback never enters, no species' recall drops too far, no poisonous or deadly species is called edible more
often, and out-of-distribution abstention does not drop. Targeted poisoning (one species relabelled) shows up
here even when the candidate's own test split, which the poisoned labels also reach, looks fine.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mycolens.data.inputs import load_images
from mycolens.data.shards import read_manifest, read_split
from mycolens.inference.onnx_model import ModelRefused, OnnxClassifier
from mycolens.utils.io import atomic_dir, sha256_file, write_json_atomic

FROZEN_SPLITS = ("test", "ood")  # the photos the frozen set keeps: labelled test photos and not-a-mushroom images


class PromotionRefused(ModelRefused):
    """The candidate is worse than the served model on the frozen set; `report` says which species moved."""

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report


EPS = 1e-9  # rates are ratios of photo counts: a drop exactly at a limit is within it


@dataclass(frozen=True)
class GateLimits:
    """The promotion limits of conf/export's `safety_gate` (see there for each value's meaning)."""

    max_recall_drop: float
    max_dangerous_edible_increase: int
    max_ood_abstain_drop: float

    @classmethod
    def from_config(cls, gate: Mapping[str, Any]) -> GateLimits:
        return cls(
            float(gate["max_recall_drop"]),
            int(gate["max_dangerous_edible_increase"]),
            float(gate["max_ood_abstain_drop"]),
        )


def frozen_set_hash(frozen_dir: str | Path) -> str:
    """sha256 over the frozen set's shard files (names and contents): the version recorded in model.json."""
    digest = hashlib.sha256()
    for split in FROZEN_SPLITS:
        for f in sorted((Path(frozen_dir) / split).glob("part-*.parquet")):
            digest.update(f"{split}/{f.name}:{sha256_file(f)}\n".encode())
    return digest.hexdigest()


def freeze_eval_set(shards_dir: str | Path, frozen_dir: str | Path) -> dict[str, Any]:
    """Copy the test and ood splits of `shards_dir` into `frozen_dir` once; an existing frozen set is never replaced."""
    frozen_dir = Path(frozen_dir)
    if not (frozen_dir / "manifest.json").is_file():
        read_manifest(shards_dir)  # a clear error when there are no shards
        with atomic_dir(frozen_dir) as tmp:
            shutil.copy2(Path(shards_dir) / "manifest.json", tmp / "manifest.json")
            for split in FROZEN_SPLITS:
                shutil.copytree(Path(shards_dir) / split, tmp / split)
    sha = frozen_set_hash(frozen_dir)
    images = {s: read_split(frozen_dir, s, columns=["label"]).num_rows for s in FROZEN_SPLITS}
    return {"path": str(frozen_dir), "sha256": sha, "images": images}


def frozen_photo_hashes(frozen_dir: str | Path) -> set[str]:
    """The sha256 of every photo in the frozen set (retraining leaves these out)."""
    return {
        h for s in FROZEN_SPLITS for h in read_split(frozen_dir, s, columns=["sha256"]).column("sha256").to_pylist()
    }


def model_scores(
    model: OnnxClassifier, frozen_dir: str | Path, batch_size: int = 64, decoded: dict | None = None
) -> dict[str, Any]:
    """Per species: recall (top-1) and photos called edible; OOD abstention; on the frozen set. `decoded` keeps the
    decoded inputs per split and preprocessing, so models that share a preprocessing share one decode."""
    frozen_dir = Path(frozen_dir)
    decoded = {} if decoded is None else decoded
    pre = model.preprocessing
    out: dict[str, Any] = {"species": {}}
    for split in FROZEN_SPLITS:
        key = (split, int(pre["image_size"]), tuple(pre["mean"]), tuple(pre["std"]))
        if key not in decoded:
            decoded[key] = load_images(frozen_dir, split, int(pre["image_size"]), pre["mean"], pre["std"])
        x, y = decoded[key]
        answers = [a for i in range(0, len(x), batch_size) for a in model.answer(x[i : i + batch_size], top_k=1)]
        verdicts = np.asarray([a["verdict"] for a in answers])
        if split == "ood":
            out["ood_abstain_rate"] = float((verdicts == "uncertain").mean()) if len(verdicts) else 1.0
            out["ood_images"] = len(verdicts)
            continue
        top1 = np.asarray([model.catalogue.index(a["species"]) for a in answers])
        for k, s in enumerate(model.catalogue.species):
            mine = y == k
            out["species"][s.id] = {
                "photos": int(mine.sum()),
                "recall": float((top1[mine] == k).mean()) if mine.any() else None,
                "edible_calls": int((verdicts[mine] == "edible").sum()),
                "dangerous": bool(s.dangerous),
            }
    return out


def compare_models(current: dict[str, Any], candidate: dict[str, Any], limits: GateLimits) -> dict[str, Any]:
    """The gate's report: every species' change and the reasons to refuse (an empty list: the candidate may ship)."""
    reasons, species = [], {}
    for sid, before in current["species"].items():
        after = candidate["species"].get(sid)
        if after is None:
            reasons.append(f"{sid}: missing from the candidate's catalogue")
            continue
        drop = (before["recall"] or 0.0) - (after["recall"] or 0.0)
        more_edible = after["edible_calls"] - before["edible_calls"]
        species[sid] = {
            "recall_before": before["recall"],
            "recall_after": after["recall"],
            "recall_drop": round(drop, 6),
            "edible_calls_before": before["edible_calls"],
            "edible_calls_after": after["edible_calls"],
            "photos": before["photos"],
        }
        if drop > limits.max_recall_drop + EPS:  # 3 of 60 photos is 0.05 exactly, not 0.0500000001
            reasons.append(f"{sid}: recall {before['recall']:.3f} -> {after['recall']:.3f}")
        if before["dangerous"] and more_edible > limits.max_dangerous_edible_increase:
            reasons.append(
                f"{sid} (poisonous/deadly): called edible {after['edible_calls']} times, before {before['edible_calls']}"
            )
    ood_drop = current["ood_abstain_rate"] - candidate["ood_abstain_rate"]
    if ood_drop > limits.max_ood_abstain_drop + EPS:
        reasons.append(f"OOD abstention {current['ood_abstain_rate']:.3f} -> {candidate['ood_abstain_rate']:.3f}")
    return {
        "passed": not reasons,
        "reasons": reasons,
        "species": species,
        "moved": sorted(
            s for s, v in species.items() if v["recall_drop"] or v["edible_calls_after"] != v["edible_calls_before"]
        ),
        "ood_abstain_rate": {"before": current["ood_abstain_rate"], "after": candidate["ood_abstain_rate"]},
        "limits": limits.__dict__,
    }


def gate_candidate(
    candidate_dir: str | Path,
    current_dir: str | Path,
    frozen: Mapping[str, Any],
    variant: str,
    limits: GateLimits,
    trained_on: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Compare the candidate with the served model on the frozen set and record the result, the frozen set's hash
    and `trained_on` (e.g. the approved claims, by id and hash) in the candidate's model.json; PromotionRefused
    when it must not ship."""
    candidate = OnnxClassifier.load(candidate_dir, variant)
    if Path(current_dir, "model.json").is_file():
        current, decoded = OnnxClassifier.load(current_dir, variant), {}
        report = compare_models(model_scores(current, frozen["path"], decoded=decoded),
                                model_scores(candidate, frozen["path"], decoded=decoded), limits)  # fmt: skip
        report["compared_with"] = current.meta["version"]
    else:  # nothing served yet: nothing to compare with
        report = {"passed": True, "reasons": [], "compared_with": None, "limits": limits.__dict__}
    report["frozen_eval"] = {"sha256": frozen["sha256"], "images": frozen["images"]}
    meta = dict(candidate.meta)  # model.json as verified at load
    meta["promotion"] = report
    if trained_on is not None:
        meta["trained_on"] = dict(trained_on)
    write_json_atomic(Path(candidate_dir, "model.json"), meta)
    if not report["passed"]:
        raise PromotionRefused(
            f"the candidate is worse than the served model on the frozen set ({frozen['sha256'][:12]}): "
            + "; ".join(report["reasons"]),
            report,
        )
    return report
