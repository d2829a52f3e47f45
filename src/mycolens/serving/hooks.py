"""Extension points of an ingress replica (the web page, drift monitoring, feedback plug in here)."""

from __future__ import annotations

import inspect
import logging
import queue
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

log = logging.getLogger(__name__)

PredictionListener = Callable[..., Any]


def _takes_size(fn: Callable[..., Any]) -> bool:
    """Whether a listener accepts the `original_size` keyword (or **kwargs)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "original_size" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


class PredictionHooks:
    """Calls listeners `fn(image_uint8_hwc, probs, original_size=(w, h))` on one background thread, in order.

    Listeners without an `original_size` parameter get `fn(image, probs)`. Never blocks a request.
    """

    def __init__(
        self, queue_size: int, on_error: Callable[[], None] = lambda: None, on_drop: Callable[[], None] = lambda: None
    ) -> None:
        self.listeners: list[tuple[PredictionListener, bool]] = []
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, queue_size))
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._on_error, self._on_drop = on_error, on_drop

    def add(self, fn: PredictionListener) -> PredictionListener:
        self.listeners.append((fn, _takes_size(fn)))
        return fn

    def emit(self, image: np.ndarray, probs: np.ndarray, original_size: tuple[int, int] | None = None) -> None:
        """Queue one observation for the listeners (dropped and counted when the queue is full)."""
        if not self.listeners:
            return
        self._ensure_thread()
        try:
            self._queue.put_nowait((image, probs, original_size))
        except queue.Full:
            self._on_drop()

    def join(self, timeout: float = 5.0) -> None:
        """Wait until queued observations were handled (tests)."""
        done = threading.Event()
        if self._thread is None:
            return
        self._queue.put((None, done, None))
        done.wait(timeout)

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="mycolens-hooks", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            image, probs, size = self._queue.get()
            if image is None:
                probs.set()
                continue
            for fn, takes_size in list(self.listeners):
                try:
                    if takes_size:
                        fn(image, probs, original_size=size)
                    else:
                        fn(image, probs)
                except Exception:
                    self._on_error()
                    log.exception("prediction hook %r failed", fn)


@dataclass
class IngressContext:
    """What an ingress replica offers to plug-ins (serve/web.py `setup(ctx)`); also `request.app.state.mycolens`."""

    config: dict[str, Any]
    root: Path
    metrics_registry: CollectorRegistry
    hooks: PredictionHooks
    model_info: Callable[[], Awaitable[dict[str, Any]]]
    state: dict[str, Any] = field(default_factory=dict)

    def on_prediction(self, fn: PredictionListener) -> PredictionListener:
        """Register `fn(image_uint8_hwc, probs, original_size=(w, h))`, called after each successful /predict image."""
        return self.hooks.add(fn)
