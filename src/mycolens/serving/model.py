"""The model a replica serves: a verified model folder in ONNX Runtime, swapped atomically on reload."""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mycolens.inference.onnx_model import VARIANTS, ModelRefused, OnnxClassifier, rule_for
from mycolens.inference.preprocess import normalize

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    """One loaded model folder with what each request needs precomputed."""

    clf: OnnxClassifier
    model_dir: str
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    info: dict[str, Any]

    @property
    def model_info(self) -> dict[str, str]:
        return self.clf.model_info


def public_info(meta: dict[str, Any], variant: str, model_dir: Path) -> dict[str, Any]:
    """The /model body: classes, input size, versions, and evaluation metrics (metrics.json) of a model folder."""
    metrics_path = model_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else None
    cat = meta["catalogue"]
    classes = [
        {k: c.get(k) for k in ("id", "scientific_name", "common_name", "edibility", "lookalikes")}
        for c in cat.get("classes", cat.get("species", []))
    ]
    pre = meta["preprocessing"]
    return {
        "name": meta["name"],
        "version": meta["version"],
        "variant": variant,
        "classes": classes,
        "num_classes": len(classes),
        "catalogue": {k: cat.get(k) for k in ("name", "version", "sha256")},
        "input_size": int(pre["image_size"]),
        "preprocessing": pre,
        "input": meta["input"],
        "output": meta["output"],
        "temperature": meta["temperature"],
        "verdict": rule_for(meta, variant).to_dict(),  # the served file's own thresholds
        "ood": meta.get("ood"),
        "safety_gate": meta.get("safety_gate"),
        "files": {variant: meta["files"][variant]},
        "source": meta.get("source"),
        "versions": meta.get("versions", {}),
        "metrics": metrics,
        "model_dir": str(model_dir),
    }


def load_model(model_dir: str | Path, variant: str, threads: int) -> LoadedModel:
    """Verify (hashes, safety gate) and load a model folder; raises ModelRefused."""
    if variant not in VARIANTS:
        raise ModelRefused(f"unknown variant {variant!r}; use one of {', '.join(VARIANTS)}")
    path = Path(model_dir)
    try:
        clf = OnnxClassifier.load(path, variant, threads=threads)
        clf.catalogue, clf.rule  # noqa: B018  (parsed once here, so a bad model.json fails the load, not a request)
    except ModelRefused:
        raise
    except Exception as exc:  # a corrupt ONNX file or model.json
        raise ModelRefused(f"{path}: cannot load the {variant} model ({exc.__class__.__name__}: {exc})") from None
    pre = clf.preprocessing
    return LoadedModel(
        clf=clf,
        model_dir=str(path),
        image_size=int(pre["image_size"]),
        mean=tuple(pre["mean"]),
        std=tuple(pre["std"]),
        info=public_info(clf.meta, variant, path),
    )


def fit_crop(image: np.ndarray, size: int) -> np.ndarray:
    """A uint8 HWC crop at the model's size (resized when a reload changed the input size mid-flight)."""
    if image.shape[0] == size and image.shape[1] == size:
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


class ModelRunner:
    """Holds the current model; requests read one reference, reloads swap it whole (old model keeps serving on refusal)."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self.current: LoadedModel | None = None
        self.last_error: str | None = None
        self.loaded_at: float | None = None
        self._lock = threading.Lock()

    def load(self, model_dir: str | Path, variant: str) -> dict[str, Any]:
        """Load and swap in a model folder; raises ModelRefused (and keeps the old model) when it is refused."""
        with self._lock:
            try:
                model = load_model(model_dir, variant, self.threads)
            except ModelRefused as exc:
                self.last_error = str(exc)
                raise
            self.current, self.last_error, self.loaded_at = model, None, time.time()
        log.info("serving %s %s from %s", model.info["version"], variant, model_dir)
        return model.info

    def require(self) -> LoadedModel:
        if self.current is None:
            raise ModelRefused(self.last_error or "no model loaded yet")
        return self.current

    def info(self) -> dict[str, Any]:
        m = self.require()
        return {**m.info, "loaded_at": self.loaded_at, "last_reload_error": self.last_error}

    def predict(self, images: list[np.ndarray], top_ks: list[int]) -> list[dict[str, Any]]:
        """Answers for uint8 HWC crops in one ONNX Runtime batch: [{answer, probs, batch_size}]."""
        m = self.require()
        batch = np.stack([fit_crop(img, m.image_size) for img in images])
        outputs = m.clf.outputs(normalize(batch, m.mean, m.std))
        probs = m.clf.probabilities(outputs[m.clf.logits_name])  # kept for the drift window
        out = m.clf.answer_outputs(outputs, max(top_ks), probs)
        results = []
        for ans, p, k in zip(out, probs, top_ks, strict=True):
            ans["top_k"] = ans["top_k"][:k]
            results.append({"answer": ans, "probs": p, "batch_size": len(images)})
        return results

    def infer(self, x: np.ndarray) -> dict[str, Any]:
        """Probabilities and logits for a preprocessed float32 NCHW batch (the v2 protocol)."""
        m = self.require()
        outputs = m.clf.outputs(x)
        logits = outputs[m.clf.logits_name]
        extra = {k: np.asarray(v, np.float32) for k, v in outputs.items() if k in ("feature_score", "input_stats")}
        return {
            "probabilities": m.clf.probabilities(logits).astype(np.float32),
            "logits": logits.astype(np.float32),
            **extra,
            "model": m.model_info,
        }


class ModelControl:
    """Desired model shared by all model replicas (a Serve deployment-scoped actor): config or /admin/reload wins, newest first."""

    def __init__(self) -> None:
        self.generation = 0
        self.config_key: str | None = None
        self.desired: dict[str, str] | None = None

    def get(self) -> dict[str, Any]:
        return {"generation": self.generation, "config_key": self.config_key, "desired": self.desired}

    def offer_config(self, config_key: str, model_dir: str, variant: str) -> dict[str, Any]:
        """A replica's user_config: becomes the desired model only when the deployment config changed."""
        if config_key != self.config_key:
            self.config_key = config_key
            self.desired = {"model_dir": model_dir, "variant": variant}
            self.generation += 1
        return self.get()

    def set(self, model_dir: str, variant: str) -> dict[str, Any]:
        """An operator's reload: the desired model for every replica, current and future."""
        self.desired = {"model_dir": model_dir, "variant": variant}
        self.generation += 1
        return self.get()
