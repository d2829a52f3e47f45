"""Serve on this machine: a free loopback port, the environment a local Ray needs for a proxy mode (with HAProxy
ports and files of its own), and waiting until the app answers. Used by the tests and the serving benchmark."""

from __future__ import annotations

import os
import socket
import time
from typing import Any

from mycolens.utils.paths import repo_root
from serve.front import front_env


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ray_env(proxy: str) -> dict[str, str]:
    """Environment for a local Ray started here (tests, benchmark): the front of `proxy` (loopback only), HAProxy ports and files of its own."""
    root = repo_root()
    env = {"MYCOLENS_ROOT": str(root), **front_env(proxy, root)}
    # Serve marks a proxy unhealthy after 3 ready checks over 5 s each; on 2 busy cores HAProxy's start can take
    # longer than that, and `serve run` then fails with ActorDiedError. Patience here changes no behaviour once up.
    env.update(RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S="60", RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S="30")
    if proxy == "haproxy":
        scratch = f"/tmp/haproxy-serve-{os.getpid()}"
        env.update(  # ports and files of its own, so it runs beside a `make serve` (HAProxy's stats/metrics: 8404/9101)
            RAY_SERVE_HAPROXY_METRICS_PORT=str(free_port()),
            RAY_SERVE_HAPROXY_STATS_PORT=str(free_port()),
            RAY_SERVE_HAPROXY_CONFIG_FILE_LOC=f"{scratch}/haproxy.cfg",
            RAY_SERVE_HAPROXY_SOCKET_PATH=f"{scratch}/admin.sock",
            RAY_SERVE_HAPROXY_SERVER_STATE_BASE=scratch,
            RAY_SERVE_HAPROXY_SERVER_STATE_FILE=f"{scratch}/server-state",
        )
    return env


def wait_ready(base_url: str, timeout: float = 180, version: str | None = None) -> dict:
    """Poll /readyz (and /model when a version is wanted) until the app answers; the /model body."""
    import httpx

    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            r = httpx.get(f"{base_url}/readyz", timeout=5)
            if r.status_code == 200:
                m = httpx.get(f"{base_url}/model", timeout=5).json()
                if version is None or m.get("version") == version:
                    return m
            last = (r.status_code, r.text[:200])
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.5)
    raise TimeoutError(f"{base_url} not ready in {timeout}s (last: {last})")
