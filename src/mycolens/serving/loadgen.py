"""Bounded HTTP load on a served app, for tests and benchmarks: client threads posting one photo to /predict."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np


@dataclass(frozen=True)
class Answer:
    start: float  # time.monotonic() when the request was sent
    seconds: float
    outcome: str  # "200" (an answer with a verdict), another status code, or the client's error


class PhotoLoad:
    """`clients` threads posting `photo` to /predict until stopped, each right after its last answer; `resize` changes
    the number of clients while it runs. Every answer is kept (with `keep`, every 200 answer's body too)."""

    def __init__(
        self, base: str, photo: bytes, clients: int = 0, keep: bool = False, query: str = "", timeout_s: float = 60
    ) -> None:
        self.base, self.photo, self.keep, self.query, self.timeout_s = base, photo, keep, query, timeout_s
        self.answers: list[Answer] = []
        self.bodies: list[dict] = []
        self._clients: list[tuple[threading.Thread, threading.Event]] = []
        self._stopped: list[threading.Thread] = []
        self._initial = clients

    @property
    def clients(self) -> int:
        return len(self._clients)

    def resize(self, n: int) -> None:
        """Start clients, or stop the newest ones (each after its request in flight), until `n` run."""
        while len(self._clients) < n:
            stop = threading.Event()
            t = threading.Thread(target=self._run, args=(stop,), daemon=True)
            t.start()
            self._clients.append((t, stop))
        while len(self._clients) > n:
            t, stop = self._clients.pop()
            stop.set()
            self._stopped.append(t)

    def _run(self, stop: threading.Event) -> None:
        with httpx.Client(base_url=self.base, timeout=self.timeout_s) as c:
            while not stop.is_set():
                t0 = time.monotonic()
                try:
                    r = c.post("/predict" + self.query, files={"file": ("p.jpg", self.photo, "image/jpeg")})
                    body = r.json() if r.status_code == 200 else {}
                    outcome = "200" if "verdict" in body else str(r.status_code)
                    if outcome == "200" and self.keep:
                        self.bodies.append(body)
                except (httpx.HTTPError, ValueError) as exc:
                    outcome = repr(exc)
                self.answers.append(Answer(t0, time.monotonic() - t0, outcome))

    def stop(self, join_s: float = 90) -> None:
        """Stop every client after its request in flight is answered."""
        self.resize(0)
        for t in self._stopped:
            t.join(join_s)

    def failed(self) -> list[Answer]:
        return [a for a in self.answers if a.outcome != "200"]

    def __enter__(self) -> PhotoLoad:
        self.resize(self._initial)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def answered_per_second(answers: list[Answer], t0: float, seconds: int) -> list[int]:
    """Successful answers finished in each second [t0 + i, t0 + i + 1) for i < seconds."""
    counts = [0] * seconds
    for a in answers:
        i = int(a.start + a.seconds - t0)
        if a.outcome == "200" and 0 <= i < seconds:
            counts[i] += 1
    return counts


@dataclass
class Ramp:
    """A load ramp and what it did: when each client count started, replica counts sampled over time, every answer."""

    t0: float
    top_ended: float  # the last step of the ramp ended; `tail` clients went on until the end
    end: float
    steps: list[tuple[float, int]]  # (time, clients from then on)
    replicas: list[tuple[float, int]]  # (time, replicas counted then)
    answers: list[Answer]


def run_ramp(
    base: str,
    photo: bytes,
    clients: list[int],
    step_s: float,
    count_replicas: Callable[[], int],
    settled: Callable[[int], bool],
    settle_timeout_s: float,
    tail: int = 1,
    poll_s: float = 0.5,
) -> Ramp:
    """Post with clients[0], clients[1], ... clients for `step_s` each, then with `tail` clients (the load gone, the
    replicas draining under traffic) while sampling `count_replicas()` until `settled(count)` holds or
    `settle_timeout_s` passes."""
    samples: list[tuple[float, int]] = []
    steps: list[tuple[float, int]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples.append((time.monotonic(), count_replicas()))
            done.wait(poll_s)

    sampler = threading.Thread(target=sample, daemon=True)
    t0 = time.monotonic()
    sampler.start()
    load = PhotoLoad(base, photo)
    try:
        for n in [*clients, tail]:
            load.resize(n)
            steps.append((time.monotonic(), n))
            if len(steps) <= len(clients):
                time.sleep(step_s)
        top_ended = steps[-1][0]
        deadline = top_ended + settle_timeout_s
        while time.monotonic() < deadline and not (samples and samples[-1][0] > top_ended and settled(samples[-1][1])):
            time.sleep(poll_s)
    finally:
        load.stop()
        done.set()
        sampler.join(30)
    return Ramp(t0, top_ended, time.monotonic(), steps, samples, load.answers)


def ramp_figures(ramp: Ramp, min_replicas: int) -> dict[str, Any]:
    """Time to scale up, peak replicas, answers/s per replica at the top step, time to scale back down, failures."""
    up_at = next((t for t, n in ramp.replicas if n > min_replicas), None)
    peak = max((n for _, n in ramp.replicas), default=0)
    down_at = next((t for t, n in ramp.replicas if t > ramp.top_ended and n <= min_replicas), None)
    top_from = ramp.steps[-2][0]  # the ramp's last step
    top = [a for a in ramp.answers if a.outcome == "200" and top_from <= a.start + a.seconds < ramp.top_ended]
    during = [n for t, n in ramp.replicas if top_from <= t < ramp.top_ended]
    rate = len(top) / (ramp.top_ended - top_from)
    failed = [a for a in ramp.answers if a.outcome != "200"]
    return {
        "clients": [n for _, n in ramp.steps],
        "requests": len(ramp.answers),
        "failed": len(failed),
        "failed_while_scaling_up": sum(1 for a in failed if a.start < ramp.top_ended),
        "failed_while_scaling_down": sum(1 for a in failed if a.start >= ramp.top_ended),
        "failures": sorted({a.outcome[:80] for a in failed})[:5],
        "scale_up_s": round(up_at - ramp.t0, 1) if up_at is not None else None,
        "peak_replicas": peak,
        "top_step_answers_per_s": round(rate, 1),
        "answers_per_s_per_replica": round(rate / float(np.mean(during)), 1) if during else None,
        "scale_down_s": round(down_at - ramp.top_ended, 1) if down_at is not None else None,
    }
