"""A rolling window of live image statistics scored against the training reference (PSI or KS per feature)."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mycolens.monitoring.features import CATEGORICAL, FEATURES, image_features, prediction_features
from mycolens.monitoring.reference import load_reference
from mycolens.monitoring.stats import score

METHODS = ("psi", "ks")


class DriftMonitor:
    """Keeps the last `window` requests' features; report() scores each feature against the reference."""

    def __init__(
        self,
        reference: dict[str, Any],
        window: int = 500,
        thresholds: float | Mapping[str, float] = 0.2,
        *,
        method: str = "psi",
        min_samples: int = 100,
        features: Sequence[str] | None = None,
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"unknown drift method {method!r}; use one of {', '.join(METHODS)}")
        if int(window) < 1 or int(min_samples) < 1:
            raise ValueError(f"window ({window}) and min_samples ({min_samples}) must be at least 1")
        wanted = list(features) if features is not None else list(FEATURES)
        unknown = [f for f in wanted if f not in FEATURES]
        if unknown:
            raise ValueError(f"unknown drift features {unknown}; known: {', '.join(FEATURES)}")
        self.reference = reference
        self.method = method
        self.window = int(window)
        self.min_samples = int(min_samples)
        self.features = [f for f in wanted if f in reference["features"]]
        self.unavailable = [f for f in wanted if f not in reference["features"]]  # e.g. no classifier at export
        if isinstance(thresholds, Mapping):
            default = float(thresholds.get("default", 0.2))
            self.thresholds = {f: float(thresholds.get(f, default)) for f in self.features}
        else:
            self.thresholds = dict.fromkeys(self.features, float(thresholds))
        self.classes = list(reference.get("classes", []))
        self._rows: deque[dict[str, Any]] = deque(maxlen=self.window)
        self._lock = threading.Lock()
        self._registered: list[tuple[Any, Any]] = []

    @classmethod
    def from_settings(cls, reference: str | Path | dict[str, Any], settings: Mapping[str, Any]) -> DriftMonitor:
        """Build from a reference (path or dict) and the `monitoring` config (window, min_samples, method, ...)."""
        ref = reference if isinstance(reference, dict) else load_reference(reference)
        return cls(
            ref,
            window=int(settings.get("window", 500)),
            thresholds=dict(settings.get("thresholds") or {}),
            method=str(settings.get("method", "psi")),
            min_samples=int(settings.get("min_samples", 100)),
            features=list(settings["features"]) if settings.get("features") else None,
        )

    @property
    def image_size(self) -> int:
        """Side of the square crop the reference statistics were computed on."""
        return int(self.reference["image_size"])

    def observe(
        self,
        image_hwc: np.ndarray,
        probs: np.ndarray | None = None,
        *,
        prediction: dict[str, Any] | None = None,
        original_size: Sequence[int] | None = None,
    ) -> None:
        """Add one request: its uint8 HWC model crop, the decoded photo's (w, h), and probs or the /predict answer."""
        row: dict[str, Any] = image_features(image_hwc, original_size)
        row.update(prediction_features(probs, self.classes, prediction))
        self.observe_features(row)

    def observe_features(self, row: Mapping[str, Any]) -> None:
        """Add one request's precomputed features (missing ones are left out of their feature's sample)."""
        with self._lock:
            self._rows.append(dict(row))

    def reset(self) -> None:
        with self._lock:
            self._rows.clear()

    def __len__(self) -> int:
        return len(self._rows)

    def report(self) -> dict[str, Any]:
        """Per feature: score, threshold and drifted flag; plus the window size and whether it is full enough."""
        with self._lock:
            rows = list(self._rows)
        n = len(rows)
        ready = n >= self.min_samples
        per: dict[str, Any] = {}
        for name in self.features:
            ref = self.reference["features"][name]
            live = [r[name] for r in rows if r.get(name) is not None]
            categorical = name in CATEGORICAL
            value = score(ref, live, self.method) if live else None
            entry: dict[str, Any] = {
                "score": None if value is None else round(value, 6),
                "threshold": self.thresholds[name],
                "drifted": bool(
                    ready and len(live) >= self.min_samples and value is not None and value > self.thresholds[name]
                ),
                "method": "psi" if categorical else self.method,
                "samples": len(live),
                "reference_split": ref.get("split", "train"),
            }
            if not categorical:
                entry["reference_mean"] = round(float(ref["mean"]), 6)
                entry["live_mean"] = round(float(np.mean(live)), 6) if live else None
            per[name] = entry
        drifted = [k for k, v in per.items() if v["drifted"]]
        src = self.reference.get("source", {})
        return {
            "status": "ok" if ready else "warming_up",
            "drifted": bool(drifted),
            "drifted_features": drifted,
            "window_size": n,
            "window": self.window,
            "min_samples": self.min_samples,
            "method": self.method,
            "features": per,
            "unavailable_features": list(self.unavailable),
            "reference": {
                "image_size": self.image_size,
                "train_images": src.get("train_images"),
                "val_images": src.get("val_images"),
                "model": self.reference.get("model"),
            },
        }

    def collect(self) -> Iterator[Any]:
        """Prometheus collector protocol: drift score, threshold and flag per feature, and the window size."""
        from prometheus_client.core import GaugeMetricFamily

        rep = self.report()
        gauges = {
            "score": GaugeMetricFamily(
                "mycolens_drift_score", "Drift score of a feature (PSI or KS)", labels=["feature"]
            ),
            "threshold": GaugeMetricFamily(
                "mycolens_drift_threshold", "Drift threshold of a feature", labels=["feature"]
            ),
            "drifted": GaugeMetricFamily("mycolens_drift_drifted", "1 when a feature has drifted", labels=["feature"]),
        }
        for name, entry in rep["features"].items():
            gauges["score"].add_metric([name], float("nan") if entry["score"] is None else entry["score"])
            gauges["threshold"].add_metric([name], entry["threshold"])
            gauges["drifted"].add_metric([name], float(entry["drifted"]))
        yield from gauges.values()
        yield GaugeMetricFamily("mycolens_drift_window_size", "Requests in the drift window", value=rep["window_size"])

    def describe(self) -> list[Any]:
        return []  # metrics are produced at scrape time; nothing to check at registration

    def register(self, registry: Any = None) -> DriftMonitor:
        """Expose the gauges in a prometheus_client registry (the default one if None); undo with unregister()."""
        from prometheus_client import REGISTRY

        registry = registry if registry is not None else REGISTRY
        registry.register(self)
        self._registered.append((registry, self))
        return self

    def unregister(self) -> None:
        while self._registered:
            registry, collector = self._registered.pop()
            registry.unregister(collector)
