"""One way to get a Ray: join the one running (or RAY_ADDRESS / a configured address), else start a small local one.

Ray is imported inside the functions, so importing this module (and the core) does not import Ray.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any


def ray_init_kwargs(ray_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """ray.init arguments: join `address` (or RAY_ADDRESS) if set, else start a small local Ray without dashboard."""
    runtime_env = dict(ray_cfg.get("runtime_env") or {}) or None
    address = ray_cfg.get("address") or os.environ.get("RAY_ADDRESS")
    if address:
        return {"address": address, "runtime_env": runtime_env, "logging_level": logging.WARNING}
    local = {k: ray_cfg.get(k) for k in ("num_cpus", "num_gpus", "object_store_memory")}
    return {
        "address": "local",
        **{k: v for k, v in local.items() if v is not None},
        "include_dashboard": bool(ray_cfg.get("include_dashboard", False)),
        "runtime_env": runtime_env,
        "logging_level": logging.WARNING,
    }


@contextmanager
def ray_session(ray_cfg: Mapping[str, Any]) -> Iterator[None]:
    """Use the Ray this process is already connected to; else init from `ray_cfg` and shut down afterwards.

    Ray's usage stats are off unless RAY_USAGE_STATS_ENABLED says otherwise.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    if ray.is_initialized():
        yield
        return
    ray.init(**ray_init_kwargs(ray_cfg))
    try:
        yield
    finally:
        ray.shutdown()
