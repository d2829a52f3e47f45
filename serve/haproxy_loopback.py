#!/usr/bin/env python3
"""HAProxy for Ray Serve on one machine, with every listener on 127.0.0.1.

Serve starts it as `RAY_SERVE_HAPROXY_BINARY_PATH` (set by serve.front.front_env): it writes the config
Serve gave (`-f FILE`) to FILE.loopback with the stats and Prometheus listeners bound to 127.0.0.1 (Ray 2.60 binds
them on every interface), then execs the real HAProxy ($MYCOLENS_HAPROXY_BINARY) with the same arguments. On Linux
HAProxy also gets SIGTERM when the Serve actor that started it dies (a killed Ray would otherwise leave it
holding the ports).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # no venv needed: serve/front.py is stdlib-only
from serve.front import loopback_config


def die_with_parent() -> None:
    """SIGTERM to this process (kept across exec) when the process that started it exits; Linux only."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before prctl took effect
        sys.exit("haproxy_loopback: the Serve actor that started HAProxy is gone")


def main(argv: list[str]) -> None:
    real = os.environ.get("MYCOLENS_HAPROXY_BINARY")
    if not real:
        sys.exit("haproxy_loopback: MYCOLENS_HAPROXY_BINARY is not set (use serve.front.front_env)")
    if Path(real).resolve() == Path(__file__).resolve():
        sys.exit("haproxy_loopback: MYCOLENS_HAPROXY_BINARY points at this wrapper, not at HAProxy")
    args = list(argv)
    if "-f" in args[:-1]:
        i = args.index("-f") + 1
        src = Path(args[i])
        dst = src.with_name(src.name + ".loopback")
        tmp = dst.with_name(f"{dst.name}.{os.getpid()}")
        tmp.write_text(loopback_config(src.read_text()))
        os.replace(tmp, dst)  # a reload never reads half a file
        args[i] = str(dst)
    die_with_parent()
    os.execv(real, [real, *args])


if __name__ == "__main__":
    main(sys.argv[1:])
