"""A Ray cluster of several nodes simulated on one machine: a head and worker nodes, each its own `ray start --block`
process (its own raylet, CPU count and ports), all under one temp dir. State (pids, address) is kept in a JSON file
so `down` stops exactly what `up` started, by pid."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mycolens.utils.io import write_json_atomic


@dataclass
class Node:
    """One simulated node: its name, the `ray start --block` process and the CPUs it offers."""

    name: str
    pid: int
    cpus: int


@dataclass
class ClusterState:
    """What `up` started: the head's address, the temp dir and every node."""

    address: str
    dashboard: str  # the head's dashboard (Ray's state API: `ray list ... --address`), on 127.0.0.1
    temp_dir: str
    object_store_bytes: int
    nodes: list[Node] = field(default_factory=list)
    ray_config: dict[str, Any] = field(default_factory=dict)  # Ray system settings of every node (RAY_<key>)

    @classmethod
    def read(cls, path: Path) -> ClusterState:
        d = json.loads(Path(path).read_text())
        nodes = [Node(**n) for n in d.pop("nodes")]
        return cls(**d, nodes=nodes)

    def write(self, path: Path) -> None:
        write_json_atomic(Path(path), asdict(self))


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ray_cli() -> str:
    """The `ray` command of this Python environment."""
    cli = Path(sys.executable).with_name("ray")
    return str(cli) if cli.exists() else shutil.which("ray") or "ray"


def node_env(ray_config: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Environment of every node: this one's (PYTHONPATH, token auth), usage stats off, and each Ray system setting
    of `ray_config` as RAY_<key>."""
    settings = {f"RAY_{k}": str(v) for k, v in (ray_config or {}).items()}
    return {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **settings}


def start_args(name: str, cpus: int, object_store_bytes: int, head: tuple[int, int] | None, address: str) -> list[str]:
    """`ray start --block` arguments of one node, with ports of its own (several raylets share one machine); `head`:
    (GCS port, dashboard port) for the head node."""
    args = [ray_cli(), "start", "--block", "--disable-usage-stats", f"--num-cpus={cpus}"]
    args += [f"--object-store-memory={object_store_bytes}", f"--resources={json.dumps({f'node:{name}': 1})}"]
    args += [f"--dashboard-agent-listen-port={free_port()}", f"--metrics-export-port={free_port()}"]
    if head is not None:
        args += ["--head", f"--port={head[0]}", f"--ray-client-server-port={free_port()}"]
        args += ["--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={head[1]}"]
    else:
        args += [f"--address={address}"]
    return args


def ensure_auth_token(env: Mapping[str, str]) -> None:
    """Create Ray's local token (~/.ray/auth_token) if there is none: `ray start` in token mode refuses to start
    without one, and the nodes, drivers and CLIs on this machine all read that file."""
    subprocess.run(
        [ray_cli(), "get-auth-token", "--generate"], env=dict(env), stdout=subprocess.DEVNULL, check=True, timeout=60
    )


def wait_nodes(address: str, n: int, timeout_s: float, env: Mapping[str, str]) -> None:
    """Wait until `ray status` at `address` lists `n` active nodes."""
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        done = subprocess.run(
            [ray_cli(), "status", f"--address={address}"], capture_output=True, text=True, env=dict(env), check=False
        )
        last = done.stdout + done.stderr
        active = last.split("Active:", 1)[-1].split("Pending:", 1)[0] if "Active:" in last else ""
        if active.count(" node_") >= n:
            return
        time.sleep(1.0)
    raise TimeoutError(f"{n} nodes did not come up at {address} within {timeout_s:.0f} s:\n{last[-2000:]}")


def up(
    state_file: Path,
    temp_dir: Path,
    nodes: int,
    cpus_per_node: int,
    object_store_bytes: int,
    timeout_s: float = 120.0,
    ray_config: Mapping[str, Any] | None = None,
) -> ClusterState:
    """Start a head and nodes - 1 worker nodes (`ray_config`: Ray system settings of every node, e.g.
    health_check_period_ms); returns (and writes to `state_file`) the address and pids."""
    if Path(state_file).exists():
        raise RuntimeError(f"{state_file} exists: a simulated cluster is up (stop it with `down` first)")
    temp_dir = Path(temp_dir)
    temp_dir.mkdir(parents=True, exist_ok=True)
    env = node_env(ray_config)
    ensure_auth_token(env)
    head_port, dashboard_port = free_port(), free_port()
    address = f"127.0.0.1:{head_port}"
    state = ClusterState(address, f"http://127.0.0.1:{dashboard_port}", str(temp_dir), object_store_bytes)
    state.ray_config = dict(ray_config or {})
    try:
        for i in range(nodes):  # one at a time: raylets joining at once can race for the session's files
            name = "head" if i == 0 else f"worker{i}"
            head = (head_port, dashboard_port) if i == 0 else None
            state.nodes.append(Node(name, _start(state, name, cpus_per_node, head, env, timeout_s), cpus_per_node))
            state.write(state_file)
        wait_nodes(address, nodes, timeout_s, env)
    except BaseException:
        down(state_file)
        raise
    return state


STARTED = b"Ray runtime started."  # what `ray start` prints once its node has registered with the head


def _start(
    state: ClusterState,
    name: str,
    cpus: int,
    head: tuple[int, int] | None,
    env: Mapping[str, str],
    timeout_s: float,
) -> int:
    """Start one node's `ray start --block` (its output appended to <temp_dir>/nodes/<name>.log) and wait until it
    says the node is up; its pid. (Watching the log, not `ray status`, leaves the 2 cores to the starting node.)"""
    args = start_args(name, cpus, state.object_store_bytes, head, state.address)
    if head is not None:
        args.append(f"--temp-dir={state.temp_dir}")
    logs = Path(state.temp_dir) / "nodes"
    logs.mkdir(parents=True, exist_ok=True)
    log_file = logs / f"{name}.log"
    with log_file.open("ab") as log:
        offset = log.tell()  # a restarted node appends to its old log
        proc = subprocess.Popen(args, env=dict(env), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout_s
    while STARTED not in log_file.read_bytes()[offset:]:
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log_file.read_bytes()[offset:][-2000:].decode(errors="replace")
            _stop_tree(proc.pid, grace_s=5.0)
            raise RuntimeError(f"node {name} did not start (exit code {proc.returncode}); {log_file}:\n{tail}")
        time.sleep(0.2)
    return proc.pid


def heal(state_file: Path, timeout_s: float = 120.0) -> list[str]:
    """Start again every worker node whose raylet is gone (what is left of it stopped by pid); the names restarted."""
    state = ClusterState.read(state_file)
    env = node_env(state.ray_config)
    restarted = []
    for node in state.nodes[1:]:
        try:
            raylet_pid(node.pid)
            continue
        except LookupError:
            pass
        _stop_tree(node.pid, grace_s=5.0)
        node.pid = _start(state, node.name, node.cpus, None, env, timeout_s)
        state.write(state_file)
        restarted.append(node.name)
    if restarted:
        wait_nodes(state.address, len(state.nodes), timeout_s, env)
    return restarted


def _tree(pid: int) -> list[Any]:
    import psutil

    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def raylet_pid(node_pid: int) -> int:
    """The raylet under a node's `ray start --block` process (what dies when a machine dies)."""
    for p in _tree(node_pid)[1:]:
        try:
            if Path(p.exe()).name == "raylet" or p.name() == "raylet":
                return p.pid
        except Exception:  # a process that ended meanwhile
            continue
    raise LookupError(f"no raylet under pid {node_pid}")


def processes_by_node(state: ClusterState, fragment: str) -> dict[str, list[int]]:
    """Node name -> pids of the live processes under that node whose command line contains `fragment` (where Ray
    runs a worker or replica is where its process is)."""
    import psutil

    out: dict[str, list[int]] = {}
    for node in state.nodes:
        for p in _tree(node.pid)[1:]:
            with contextlib.suppress(psutil.Error):
                if fragment in " ".join(p.cmdline()) and p.status() != psutil.STATUS_ZOMBIE:
                    out.setdefault(node.name, []).append(p.pid)
    return out


def kill_node(state: ClusterState, name: str) -> int:
    """SIGKILL the raylet of node `name` (the node is lost; its workers die with it); returns the raylet's pid."""
    (node,) = [n for n in state.nodes if n.name == name]
    pid = raylet_pid(node.pid)
    os.kill(pid, signal.SIGKILL)
    return pid


def down(state_file: Path, grace_s: float = 15.0) -> list[int]:
    """Stop every process `up` started, by pid: SIGTERM to all nodes at once, SIGKILL to what is left after `grace_s`;
    returns the pids stopped."""
    state_file = Path(state_file)
    if not state_file.exists():
        return []
    state = ClusterState.read(state_file)
    stopped = _stop_trees([n.pid for n in reversed(state.nodes)], grace_s)
    state_file.unlink()
    return stopped


def _stop_tree(pid: int, grace_s: float) -> list[int]:
    """SIGTERM a process and its descendants, SIGKILL what is left after `grace_s`; the pids."""
    return _stop_trees([pid], grace_s)


def _stop_trees(pids: list[int], grace_s: float) -> list[int]:
    """SIGTERM these processes and their descendants (in this order), all at once; SIGKILL what is left after
    `grace_s`; the pids."""
    import psutil

    procs = [p for pid in pids for p in _tree(pid)]
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(alive, timeout=5)
    return [p.pid for p in procs]


def serve_config_for(doc: dict[str, Any], ingress_cpus: float = 0.25) -> dict[str, Any]:
    """A Serve config (serve/config.yaml's shape) fitted to the simulated cluster: one HTTP proxy, the head's (the
    nodes share this machine's ports), and the ingress on the head node (its custom resource node:head)."""
    doc = {**doc, "proxy_location": "HeadOnly"}
    app = dict(doc["applications"][0])
    ingress = {
        "name": "MycolensIngress",
        "ray_actor_options": {"num_cpus": ingress_cpus, "resources": {"node:head": 0.01}},
    }
    app["deployments"] = [*[d for d in app.get("deployments", []) if d["name"] != "MycolensIngress"], ingress]
    doc["applications"] = [app, *doc["applications"][1:]]
    return doc
