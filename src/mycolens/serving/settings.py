"""Serving settings read from the `serve` config section (conf/serve/default.yaml); no defaults hide here."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mycolens.utils.paths import repo_root


@dataclass(frozen=True)
class Limits:
    """Request limits: body bytes and decoded pixels (413 above), smallest image side, top_k range, v2 batch."""

    max_body_bytes: int
    max_pixels: int
    min_side: int
    max_top_k: int
    default_top_k: int
    max_v2_batch: int


@dataclass(frozen=True)
class Bucket:
    """A token bucket's size: `rate_per_s` tokens a second, up to `burst`; each request takes one."""

    rate_per_s: float
    burst: int

    @classmethod
    def from_config(cls, value: Mapping[str, Any] | float | None, name: str) -> Bucket | None:
        """None (the limit is off) for null, 0 or a zero rate/burst; ValueError for negative sizes."""
        if not value:
            return None
        if not isinstance(value, Mapping):
            raise ValueError(f"serve.rate_limits.{name} must be null or {{rate_per_s, burst}}, got {value!r}")
        rate, burst = float(value["rate_per_s"]), int(value["burst"])
        if rate < 0 or burst < 0:
            raise ValueError(f"serve.rate_limits.{name}: rate_per_s and burst must be >= 0, got {rate}, {burst}")
        return cls(rate, burst) if rate > 0 and burst > 0 else None


@dataclass(frozen=True)
class RateLimitSettings:
    """Per-client rate limits of the ingress (mycolens.serving.ratelimit); a limit of None is off."""

    predict: Bucket | None  # POST /predict and the v2 infer routes (one bucket per client)
    feedback: Bucket | None  # POST /feedback (serve/web.py)
    max_clients: int  # clients tracked per limit; the least recently seen is forgotten beyond it
    trust_forwarded_for: bool  # key on X-Forwarded-For's last hop when the peer is one of trusted_proxies
    trusted_proxies: tuple[str, ...]  # addresses or networks (CIDR) of the proxies in front of the ingress

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> RateLimitSettings:
        return cls(
            predict=Bucket.from_config(cfg["predict"], "predict"),
            feedback=Bucket.from_config(cfg["feedback"], "feedback"),
            max_clients=int(cfg["max_clients"]),
            trust_forwarded_for=bool(cfg["trust_forwarded_for"]),
            trusted_proxies=tuple(str(p) for p in cfg["trusted_proxies"] or ()),
        )


@dataclass(frozen=True)
class ServeSettings:
    """What the HTTP layer needs from config."""

    limits: Limits
    decode_threads: int
    hook_queue_size: int
    reload_token_env: str
    reload_wait_s: float
    app_title: str
    rate_limits: RateLimitSettings
    cross_origin_isolated: bool  # the page with COOP/COEP (multi-threaded WASM for field mode)
    wasm_threads: int  # field mode's ONNX Runtime Web threads; 0: min(4, the device's cores)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> ServeSettings:
        lim = cfg["limits"]
        return cls(
            limits=Limits(
                max_body_bytes=int(lim["max_body_bytes"]),
                max_pixels=int(lim["max_pixels"]),
                min_side=int(lim["min_side"]),
                max_top_k=int(cfg["top_k"]["max"]),
                default_top_k=int(cfg["top_k"]["default"]),
                max_v2_batch=int(lim["max_v2_batch"]),
            ),
            decode_threads=int(cfg["model"]["decode_threads"]),
            hook_queue_size=int(cfg["hooks"]["queue_size"]),
            reload_token_env=str(cfg["reload"]["token_env"]),
            reload_wait_s=float(cfg["reload"]["wait_s"]),
            app_title=str(cfg.get("title", "mycolens")),
            rate_limits=RateLimitSettings.from_config(cfg["rate_limits"]),
            cross_origin_isolated=bool(cfg["field"]["cross_origin_isolated"]),
            wasm_threads=int(cfg["field"]["wasm_threads"]),
        )

    def reload_token(self) -> str | None:
        """The admin reload token from the environment; None (reload disabled) when unset or empty."""
        return os.environ.get(self.reload_token_env) or None


def resolve_path(path: str | Path, root: Path | None = None) -> Path:
    """An absolute path: relative paths are taken from the repository root, not the process's cwd."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else ((root or repo_root()) / p).resolve()


def ort_threads(threads: int | None, num_cpus: float | None) -> int:
    """ONNX Runtime intra-op threads: the configured number, else the replica's CPU share (at least 1)."""
    if threads:
        return int(threads)
    return max(1, int(round(num_cpus or 1)))
