"""A served model: model.json + ONNX files, verified by hash, run by ONNX Runtime, answered by the safety rule."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from mycolens.catalogue import Catalogue
from mycolens.utils.io import sha256_file
from mycolens.verdict.calibration import energy_score, softmax
from mycolens.verdict.rule import VerdictRule, judge

VARIANTS = ("fp32", "int8")


# the fields of one answer that describe the photo (the HTTP answer adds lookalikes and model): claims record them,
# offline prediction's CSV has one column each
ANSWER_FIELDS = (
    "species",
    "common_name",
    "edibility",
    "verdict",
    "confidence",
    "poisonous_probability",
    "abstained",
    "abstain_reason",
    "top_k",
)


class ModelRefused(ValueError):
    """A model folder that must not be served (missing file, hash mismatch, failed safety gate)."""


def read_model_json(model_dir: str | Path) -> dict[str, Any]:
    path = Path(model_dir) / "model.json"
    if not path.is_file():
        raise ModelRefused(f"no model.json in {model_dir}: run `python scripts/export.py` first")
    return json.loads(path.read_text())


def verify_model_dir(model_dir: str | Path, variant: str) -> dict[str, Any]:
    """model.json of a folder whose `variant` file matches its recorded hash and whose safety gate passed."""
    meta = read_model_json(model_dir)
    if variant not in meta.get("files", {}):
        raise ModelRefused(f"{model_dir}: model.json has no {variant!r} file (has {sorted(meta.get('files', {}))})")
    entry = meta["files"][variant]
    path = Path(model_dir) / entry["path"]
    if not path.is_file():
        raise ModelRefused(f"{path} is missing")
    if sha256_file(path) != entry["sha256"]:
        raise ModelRefused(f"{path}: content hash differs from model.json; refusing a tampered or half-copied model")
    gate = meta.get("safety_gate", {})
    if not gate.get("passed", False):
        raise ModelRefused(f"{model_dir}: safety gate did not pass ({gate}); an unsafe model is never served")
    return meta


def rule_for(meta: dict[str, Any], variant: str) -> VerdictRule:
    """The verdict rule of one model file: its own fitted thresholds when model.json has them."""
    return VerdictRule.from_dict(meta.get("verdict_by_variant", {}).get(variant) or meta["verdict"])


def make_session(path: str | Path, threads: int = 0, providers: Sequence[str] | None = None) -> Any:
    """An ONNX Runtime session; CUDA when the installed runtime offers it, else CPU."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    available = ort.get_available_providers()
    wanted = list(providers) if providers else ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ort.InferenceSession(
        str(path), opts, providers=[p for p in wanted if p in available] or ["CPUExecutionProvider"]
    )


@dataclass
class OnnxClassifier:
    """Logits from ONNX Runtime, then temperature, OOD score and verdict as model.json prescribes."""

    meta: dict[str, Any]
    session: Any
    variant: str

    @classmethod
    def load(
        cls, model_dir: str | Path, variant: str = "fp32", threads: int = 0, providers: Sequence[str] | None = None
    ) -> OnnxClassifier:
        meta = verify_model_dir(model_dir, variant)
        return cls(meta, make_session(Path(model_dir) / meta["files"][variant]["path"], threads, providers), variant)

    @cached_property
    def catalogue(self) -> Catalogue:
        return Catalogue.from_dict(self.meta["catalogue"])

    @cached_property
    def rule(self) -> VerdictRule:
        return rule_for(self.meta, self.variant)

    @property
    def preprocessing(self) -> dict[str, Any]:
        return self.meta["preprocessing"]

    @property
    def input_name(self) -> str:
        return self.session.get_inputs()[0].name

    def outputs(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Every output of the graph for a float32 NCHW batch: logits[, feature_score, input_stats]."""
        values = self.session.run(None, {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})
        return {o.name: v for o, v in zip(self.session.get_outputs(), values, strict=True)}

    @property
    def logits_name(self) -> str:
        """The graph's first output: the logits (score heads, where the graph has them, come after)."""
        return self.session.get_outputs()[0].name

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Raw logits for a float32 NCHW batch (the score heads are not asked for)."""
        return self.session.run([self.logits_name], {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})[0]

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        return softmax(logits, float(self.meta["temperature"]))

    def ood_scores(self, logits: np.ndarray) -> np.ndarray:
        """The OOD score the threshold in model.json was chosen for (energy at the fitted temperature)."""
        return energy_score(logits, float(self.meta["temperature"]))

    def answer(self, x: np.ndarray, top_k: int = 3) -> list[dict[str, Any]]:
        """The HTTP contract's prediction fields for each image of a preprocessed batch."""
        return self.answer_outputs(self.outputs(x), top_k)

    def answer_outputs(
        self, outputs: dict[str, np.ndarray], top_k: int = 3, probs: np.ndarray | None = None
    ) -> list[dict[str, Any]]:
        """Answers from the graph's outputs (every abstention signal the model carries is applied); `probs`, the
        calibrated probabilities of these logits, when the caller has them already."""
        logits = outputs[self.logits_name]
        return answers(
            self.probabilities(logits) if probs is None else probs,
            self.ood_scores(logits),
            self.catalogue,
            self.rule,
            top_k,
            self.model_info,
            outputs.get("feature_score"),
            outputs.get("input_stats"),
        )

    @property
    def model_info(self) -> dict[str, str]:
        return {"name": self.meta["name"], "version": self.meta["version"], "variant": self.variant}


def answers(
    probs: np.ndarray,
    ood_scores: np.ndarray,
    catalogue: Catalogue,
    rule: VerdictRule,
    top_k: int,
    model_info: dict[str, str],
    feature_scores: np.ndarray | None = None,
    input_stats: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """Prediction dicts ({species, common_name, edibility, verdict, confidence, ...}) from calibrated probs."""
    dangerous = catalogue.dangerous_mask
    judged = judge(probs, dangerous, rule, ood_scores, feature_scores, input_stats)
    p_danger = np.asarray(probs)[:, np.asarray(dangerous)].sum(axis=1)
    out = []
    for row, (verdict, reason), pd in zip(probs, judged, p_danger, strict=True):
        order = np.argsort(-row, kind="stable")[: max(1, min(top_k, len(row)))]
        top = catalogue[int(order[0])]
        out.append(
            {
                "species": top.id,
                "common_name": top.common_name,
                "edibility": top.edibility,
                "verdict": verdict,
                "confidence": round(float(row[order[0]]), 6),
                "poisonous_probability": round(float(pd), 6),
                "abstained": verdict == "uncertain",
                "abstain_reason": reason,
                "top_k": [
                    {
                        "species": catalogue[int(i)].id,
                        "probability": round(float(row[i]), 6),
                        "edibility": catalogue[int(i)].edibility,
                    }
                    for i in order
                ],
                "lookalikes": [
                    {
                        "species": s,
                        "common_name": catalogue[s].common_name,
                        "edibility": catalogue[s].edibility,
                        "note": catalogue[s].note,
                    }
                    for s in top.lookalikes
                ],
                "model": dict(model_info),
            }
        )
    return out
