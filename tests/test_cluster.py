"""A Ray cluster of three nodes simulated on this machine (scripts/cluster.py: a head and two worker nodes, each its
own raylet with 1 CPU): Ray Train spreads its workers over nodes and survives losing one.

The node is lost the way a machine is: its raylet is SIGKILLed by pid, and the Ray workers on it die with it.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from mycolens.utils import local_cluster
from tests.conftest import ROOT
from tests.ray_fixtures import PYTHON, RAY_ENV, kill_group, tiny_overrides
from tests.test_ray_train import registered_checkpoints

pytestmark = pytest.mark.slow
ENV = {**os.environ, **RAY_ENV, "RAY_AUTH_MODE": "token"}


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[local_cluster.ClusterState, Path]]:
    """`python scripts/cluster.py action=up` (3 nodes x 1 CPU) in a short temp dir; `action=down` afterwards."""
    tmp = Path(tempfile.mkdtemp(prefix="mc", dir="/tmp"))
    overrides = [f"cluster.temp_dir={tmp / 'ray'}", f"cluster.state_file={tmp / 'state.json'}", f"paths.log_dir={tmp}"]
    up = subprocess.run(
        [PYTHON, "scripts/cluster.py", "action=up", *overrides], cwd=ROOT, env=ENV, capture_output=True, text=True
    )
    try:
        assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-3000:]
        state = local_cluster.ClusterState.read(tmp / "state.json")
        assert f"RAY_ADDRESS={state.address}" in up.stdout and len(state.nodes) == 3
        yield state, tmp
    finally:
        down = subprocess.run(
            [PYTHON, "scripts/cluster.py", "action=down", *overrides], cwd=ROOT, env=ENV, capture_output=True, text=True
        )
        assert down.returncode == 0, down.stderr[-2000:]
        assert not (tmp / "state.json").exists()


def ray_list(kind: str, address: str, *filters: str) -> list[dict]:
    """`ray list KIND --detail --format json` at `address` (Ray's state API, through its CLI)."""
    args = [str(Path(PYTHON).with_name("ray")), "list", kind, "--address", address, "--detail", "--format", "json"]
    for f in filters:
        args += ["--filter", f]
    out = subprocess.run(args, env=ENV, capture_output=True, text=True, check=True, timeout=60)
    return json.loads(out.stdout)


def node_names(dashboard: str) -> dict[str, str]:
    """Ray node id -> the simulated node's name (its custom resource node:<name>, set by scripts/cluster.py)."""
    names = {}
    for n in ray_list("nodes", dashboard):
        custom = [
            r[5:] for r in n["resources_total"] if r.startswith("node:") and r[5:] in ("head", "worker1", "worker2")
        ]
        names[n["node_id"]] = custom[0]
    return names


def train_workers_by_node(state: local_cluster.ClusterState) -> dict[str, list[int]]:
    """Node name -> pids of the Ray Train workers running under that node's raylet (from the process tree)."""
    out: dict[str, list[int]] = {}
    for node in state.nodes:
        for p in psutil.Process(node.pid).children(recursive=True):
            try:
                if "RayTrainWorker" in " ".join(p.cmdline()):
                    out.setdefault(node.name, []).append(p.pid)
            except psutil.Error:
                pass
    return out


def train(tmp: Path, shards: Path, address: str, *extra: str) -> subprocess.Popen:
    """`scripts/train.py trainer=ray` with 2 SPREAD workers for 4 epochs on the cluster at `address` (a subprocess)."""
    overrides = [
        *tiny_overrides(tmp, shards),
        "trainer=ray",
        "trainer.num_workers=2",
        "trainer.placement_strategy=SPREAD",
        "trainer.max_failures=1",
        "trainer.max_epochs=4",
        "callbacks.early_stopping=null",
        "ray=cluster",
        f"ray.address={address}",
        *extra,
    ]
    log = (tmp / "train.log").open("w")
    try:
        return subprocess.Popen(
            [PYTHON, "scripts/train.py", *overrides],
            cwd=ROOT,
            env=ENV,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        log.close()


def test_ray_train_spreads_workers_over_nodes_and_survives_losing_one(cluster, tmp_path, tiny_shards):
    """2 workers SPREAD over 3 nodes land on 2 nodes; the raylet of a worker node holding one is killed after the
    first reported checkpoint; the run restarts from it on the nodes left, finishes 4 epochs, publishes
    models/best.ckpt, and tests within 2 points of the same run undisturbed."""
    state, _ = cluster
    disturbed, calm = tmp_path / "disturbed", tmp_path / "calm"
    disturbed.mkdir()
    calm.mkdir()
    proc = train(disturbed, tiny_shards, state.address)
    killed, placed = None, {}
    try:
        deadline = time.monotonic() + 600
        while proc.poll() is None and time.monotonic() < deadline and killed is None:
            if registered_checkpoints(disturbed / "logs" / "ray"):
                placed = train_workers_by_node(state)
                victims = [n for n in placed if n != "head"]
                if victims:
                    killed = local_cluster.kill_node(state, victims[0])
            time.sleep(0.2)
        assert killed is not None, f"no worker node held a Ray Train worker: {placed}"
        proc.wait(timeout=900)
    finally:
        kill_group(proc.pid)
    log = (disturbed / "train.log").read_text()
    assert proc.returncode == 0, log[-4000:]
    report = json.loads((disturbed / "reports" / "train.json").read_text())
    assert report["ray_restarted"] == 1 and "resumed from" in log, log[-3000:]
    assert report["epochs"] == 4 and (disturbed / "models" / "best.ckpt").is_file()

    # Ray's state: the first worker group sat on two different nodes, the restarted one on the nodes left
    names = node_names(state.dashboard)
    workers = ray_list("actors", state.dashboard, "class_name=RayTrainWorker")
    groups = sorted(workers, key=lambda a: a.get("start_time_ms") or 0)
    first, second = groups[:2], groups[2:]
    assert len(first) == 2 and len(second) >= 2, [(names.get(a["node_id"]), a["state"]) for a in workers]
    assert len({a["node_id"] for a in first}) == 2, "SPREAD put both workers on one node"
    lost = [n for n, name in names.items() if name in placed and name != "head"][:1]
    assert not {a["node_id"] for a in second[-2:]} & set(lost), "the restarted group used the lost node"

    # the same run with nobody killed: the disturbed run lost nothing that shows in the test metrics
    proc = train(calm, tiny_shards, state.address)
    try:
        assert proc.wait(timeout=900) == 0, (calm / "train.log").read_text()[-4000:]
    finally:
        kill_group(proc.pid)
    undisturbed = json.loads((calm / "reports" / "train.json").read_text())
    print("node loss:", json.dumps({"placed": placed, "disturbed": report, "undisturbed": undisturbed})[:3000])
    assert undisturbed["ray_restarted"] == 0
    for k in ("test/accuracy", "test/macro_f1"):
        assert abs(report[k] - undisturbed[k]) <= 0.02, (k, report[k], undisturbed[k])
