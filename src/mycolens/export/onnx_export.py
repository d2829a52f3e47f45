"""torch.onnx (dynamo) export with a dynamic batch axis, one self-contained file, and the check against PyTorch."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
CHATTY_LOGGERS = ("onnx_ir", "onnxscript", "torch.onnx", "torch.export", "onnxruntime")


@contextmanager
def quiet_loggers(names: tuple[str, ...] = CHATTY_LOGGERS, level: int = logging.WARNING) -> Iterator[None]:
    """Hold the exporter's and quantizer's INFO chatter (pass by pass) back while they run."""
    loggers = [logging.getLogger(n) for n in names]
    before = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(level, lg.level))
    try:
        yield
    finally:
        for lg, lvl in zip(loggers, before, strict=True):
            lg.setLevel(lvl)


def export_onnx(
    net: nn.Module, path: str | Path, image_size: int, opset: int = 20, output_names: Sequence[str] = (OUTPUT_NAME,)
) -> Path:
    """Write `net` as ONNX (input "input" [batch, 3, S, S]; outputs `output_names`, logits first), weights inside."""
    net = net.eval()
    example = torch.zeros(2, 3, image_size, image_size)  # batch 2: a batch of 1 would be specialised away
    with warnings.catch_warnings(), quiet_loggers():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (example,),
            str(path),
            dynamo=True,
            opset_version=int(opset),
            input_names=[INPUT_NAME],
            output_names=list(output_names),
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            external_data=False,
            optimize=True,
            verbose=False,
        )
    return Path(path)


def session(path: str | Path, threads: int = 0) -> Any:
    """A CPU ONNX Runtime session (evaluation and export checks always run on CPU, deterministic)."""
    from mycolens.inference.onnx_model import make_session

    return make_session(path, threads=threads, providers=["CPUExecutionProvider"])


def onnx_logits(sess: Any, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """float32 logits of a float32 NCHW array from an ORT session, in batches."""
    name = sess.get_inputs()[0].name
    first = sess.get_outputs()[0].name  # logits come first in every exported graph
    out = [
        sess.run([first], {name: np.ascontiguousarray(x[i : i + batch_size], np.float32)})[0]
        for i in range(0, len(x), batch_size)
    ]
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def onnx_outputs(sess: Any, x: np.ndarray, batch_size: int = 64) -> dict[str, np.ndarray]:
    """Every output of an ORT session ({logits[, feature_score, input_stats]}) for a float32 NCHW array, in batches."""
    name = sess.get_inputs()[0].name
    names = [o.name for o in sess.get_outputs()]
    parts = [
        sess.run(None, {name: np.ascontiguousarray(x[i : i + batch_size], np.float32)})
        for i in range(0, len(x), batch_size)
    ]
    if not parts:
        return {n: np.zeros((0,), np.float32) for n in names}
    return {n: np.concatenate([p[k] for p in parts]) for k, n in enumerate(names)}


def compare_scores(reference: dict[str, np.ndarray], other: dict[str, np.ndarray]) -> dict[str, float]:
    """Largest relative difference of the feature score and absolute difference of the input statistics."""
    out = {}
    if "feature_score" in reference and len(reference["feature_score"]):
        ref, got = np.asarray(reference["feature_score"], np.float64), np.asarray(other["feature_score"], np.float64)
        out["feature_score_max_rel_diff"] = float((np.abs(ref - got) / np.maximum(np.abs(ref), 1e-6)).max())
    if "input_stats" in reference and len(reference["input_stats"]):
        diff = np.abs(np.asarray(reference["input_stats"], np.float64) - other["input_stats"])
        out["input_stats_max_abs_diff"] = float(diff.max())
    return out


def compare_logits(reference: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """Max absolute logit difference and top-1 agreement of `other` against `reference`."""
    if len(reference) == 0:
        return {"max_abs_diff": 0.0, "top1_agreement": 1.0, "images": 0}
    return {
        "max_abs_diff": float(np.abs(np.asarray(reference, np.float64) - other).max()),
        "top1_agreement": float((reference.argmax(1) == other.argmax(1)).mean()),
        "images": len(reference),
    }
