"""One way to get a Ray: join the one running (or RAY_ADDRESS / a configured address), else start a small local one.

Ray is imported inside the functions, so importing this module (and the core) does not import Ray.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
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


def unseen_paths(paths: Sequence[str | Path], timeout_s: float = 60.0) -> dict[str, list[str]]:
    """Node id -> those of the local `paths` that node cannot see, for every alive node of the connected Ray (one
    zero-CPU task pinned to each node); URLs (s3://, gs://) are not checked. Empty when every node sees them all."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    local = [str(p) for p in paths if "://" not in str(p)]
    if not local:
        return {}

    @ray.remote(num_cpus=0)
    def missing(ps: list[str]) -> list[str]:
        return [p for p in ps if not os.path.exists(p)]

    alive = [n["NodeID"] for n in ray.nodes() if n.get("Alive")]
    refs = {
        node: missing.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(local)
        for node in alive
    }
    return {node: gone for node, ref in refs.items() if (gone := ray.get(ref, timeout=timeout_s))}


def unshared(paths: Mapping[str, str | Path]) -> str | None:
    """What to tell the user when some node cannot see one of `paths` (config key -> path); None when all see all."""
    unseen = unseen_paths(list(paths.values()))
    if not unseen:
        return None
    lines = []
    for key, path in paths.items():
        nodes = [n[:12] for n, gone in unseen.items() if str(path) in gone]
        if nodes:
            lines.append(f"{key}={path} is not visible on node(s) {', '.join(nodes)}")
    return (
        "; ".join(lines) + ": on a multi-node cluster put it on storage every node sees (NFS, or s3://... for the "
        "storage paths)"
    )
