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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from mycolens.serving.loadgen import PhotoLoad, ramp_figures, run_ramp
from mycolens.utils import local_cluster
from tests.conftest import ROOT
from tests.ray_fixtures import PYTHON, RAY_ENV, kill_group, registered_checkpoints, tiny_overrides
from tests.serve_fixtures import (
    free_port,
    image_bytes,
    make_model_dir,
    model_version,
    serve_run_config,
    wait_ready,
    write_serve_config,
)

pytestmark = pytest.mark.slow
# Ray 2.60's `ray start` turns token auth on; its CLIs (ray list, serve run) must be told to use it
ENV = {**os.environ, **RAY_ENV, "RAY_AUTH_MODE": "token"}


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[local_cluster.ClusterState, Path]]:
    """`python scripts/cluster.py action=up` (3 nodes x 1 CPU) in a short temp dir; `action=down` afterwards."""
    tmp = Path(tempfile.mkdtemp(prefix="mc", dir="/tmp"))
    saved = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "token"  # for serve_run_config, which passes this process's environment
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
        if saved is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = saved
        assert down.returncode == 0, down.stderr[-2000:]
        assert not (tmp / "state.json").exists()


def current(cluster) -> local_cluster.ClusterState:
    """The cluster as its state file says now (a healed node has a new pid)."""
    return local_cluster.ClusterState.read(cluster[1] / "state.json")


@pytest.fixture(autouse=True)
def healed(cluster) -> None:
    """Each test starts with every node up: a node an earlier test killed is started again first (before, not
    after, so the last test's lost node is not restarted only to be stopped)."""
    local_cluster.heal(cluster[1] / "state.json")


def ray_list(kind: str, address: str, *filters: str) -> list[dict]:
    """`ray list KIND --detail --format json` at `address` (Ray's state API, through its CLI)."""
    args = [str(Path(PYTHON).with_name("ray")), "list", kind, "--address", address, "--detail", "--format", "json"]
    for f in filters:
        args += ["--filter", f]
    out = subprocess.run(args, env=ENV, capture_output=True, text=True, check=True, timeout=60)
    return json.loads(out.stdout)


def node_names(dashboard: str, *filters: str) -> dict[str, str]:
    """Ray node id -> the simulated node's name (its custom resource node:<name>, set by scripts/cluster.py)."""
    names = {}
    for n in ray_list("nodes", dashboard, *filters):
        custom = [
            r[5:] for r in n["resources_total"] if r.startswith("node:") and r[5:] in ("head", "worker1", "worker2")
        ]
        names[n["node_id"]] = custom[0]
    return names


def train_workers_by_node(state: local_cluster.ClusterState) -> dict[str, list[int]]:
    """Node name -> pids of the Ray Train workers running under that node's raylet (from the process tree)."""
    return local_cluster.processes_by_node(state, "RayTrainWorker")


def replicas_by_node(state: local_cluster.ClusterState, deployment: str) -> dict[str, int]:
    """Node name -> live Serve replica processes of `deployment` under that node's raylet (the process tree)."""
    found = local_cluster.processes_by_node(state, f"ServeReplica:mycolens:{deployment}")
    return {name: len(pids) for name, pids in found.items()}


@dataclass
class Served:
    base: str
    config: Path
    model_dir: Path
    tmp: Path


@pytest.fixture(scope="class")
def served(cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The app on the cluster (`serve run`): 2 model replicas, one per node (serve.model.max_replicas_per_node=1),
    the ingress on the head, one HTTP proxy (the head's: the simulated nodes share this machine's ports)."""
    import yaml

    state = current(cluster)
    tmp = tmp_path_factory.mktemp("served")
    model_dir = make_model_dir(tmp)
    overrides = [
        f"serve.model_dir={model_dir}",
        "serve.variant=int8",
        "serve.model.num_replicas=2",
        "serve.model.max_replicas_per_node=1",
        "serve.model.ray_actor_options.num_cpus=0.5",
        f"monitoring.feedback.dir={tmp / 'feedback'}",
    ]
    port = free_port()
    config = write_serve_config(tmp / "serve.yaml", port, overrides, {"model_dir": str(model_dir), "variant": "int8"})
    doc = local_cluster.serve_config_for(yaml.safe_load(config.read_text()))
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    done = serve_run_config(config, state.address, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(base, timeout=240)
        yield Served(base, config, model_dir, tmp)
    finally:
        serve_cli("shutdown", "-y", "--address", state.dashboard)


def model_replica_states(state: local_cluster.ClusterState) -> dict[str, int] | None:
    """The model deployment's replica states from `serve status` (e.g. {"RUNNING": 2, "STOPPING": 1}) once the app
    is RUNNING and the deployment HEALTHY; None before."""
    import yaml

    out = serve_cli("status", "--address", state.dashboard)
    app = (yaml.safe_load(out.stdout) or {}).get("applications", {}).get("mycolens", {})
    model = app.get("deployments", {}).get("MycolensModel", {})
    if app.get("status") != "RUNNING" or model.get("status") != "HEALTHY":
        return None
    return {k: v for k, v in model.get("replica_states", {}).items() if v}


def serve_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(Path(PYTHON).with_name("serve")), *args], env=ENV, capture_output=True, text=True, timeout=240
    )


def wait_replicas(state: local_cluster.ClusterState, n: int, timeout_s: float = 120) -> dict[str, int]:
    """Wait until `n` model replicas run (the process tree); where they are."""
    deadline = time.monotonic() + timeout_s
    while sum((placed := replicas_by_node(state, "MycolensModel")).values()) < n and time.monotonic() < deadline:
        time.sleep(0.5)
    return placed


class TestServingOnTheCluster:
    """The app on the cluster; Serve is shut down after this class, before the training tests need the CPUs. In file
    order: the node-loss test needs 2 replicas of any model; the deploy test leaves its second model deployed; the
    autoscaling test deploys a config of its own."""

    def test_loses_a_node_under_load_without_failed_requests(self, cluster, served):
        serving_loses_a_node(cluster, served)

    def test_serve_deploy_of_a_new_model_under_load_answers_with_one_version_each(self, cluster, served):
        serve_deploy_under_load(cluster, served)

    def test_autoscaling_follows_a_load_ramp_up_and_back_down_without_errors(self, cluster, served):
        autoscaling_under_a_ramp(cluster, served)


def serving_loses_a_node(cluster, served) -> None:
    """8 clients for a bounded time; the raylet of a worker node holding a model replica is killed: count failed
    requests (goal 0: the ingress retries a call whose replica died), p99 during the fault, time to 2 replicas again."""
    state = current(cluster)
    placed = wait_replicas(state, 2)
    assert len(placed) == 2, placed  # one replica per node
    assert replicas_by_node(state, "MycolensIngress") == {"head": 1}
    victim = next(n for n in placed if n != "head")
    with PhotoLoad(served.base, image_bytes(), clients=8) as load:
        time.sleep(3)
        killed_at = time.monotonic()
        local_cluster.kill_node(state, victim)
        recovered = None
        while time.monotonic() - killed_at < 60:
            now = replicas_by_node(state, "MycolensModel")
            if victim not in now and sum(now.values()) == 2:
                recovered = time.monotonic() - killed_at
                break
            time.sleep(0.25)
        time.sleep(2)
    answers = load.answers
    failed = load.failed()
    fault = [a.seconds for a in answers if killed_at <= a.start < killed_at + 10]
    before = [a.seconds for a in answers if a.start < killed_at]
    report = {
        "requests": len(answers),
        "failed": len(failed),
        "failures": sorted({f.outcome[:80] for f in failed}),
        "p99_ms_before": round(1000 * float(np.percentile(before, 99)), 1),
        "p99_ms_fault_10s": round(1000 * float(np.percentile(fault, 99)), 1) if fault else None,
        "replicas_back_s": round(recovered, 1) if recovered is not None else None,
        "placed": placed,
        "victim": victim,
    }
    print("serve node loss:", json.dumps(report))
    assert recovered is not None, report
    assert not failed, report


def serve_deploy_under_load(cluster, served) -> None:
    """`serve deploy` of the same app with another model folder while 4 clients post: no request fails, and every
    answer is exactly the old model's or the new model's answer for that photo (never a mix of the two)."""
    import yaml

    state = current(cluster)
    wait_replicas(state, 2)
    photo = image_bytes(seed=5)
    second = make_model_dir(served.tmp / "second", seed=1)

    def answer() -> dict:
        r = httpx.post(served.base + "/predict?top_k=14", files={"file": ("p.jpg", photo, "image/jpeg")}, timeout=60)
        assert r.status_code == 200, r.text
        return r.json()

    old = answer()
    doc = yaml.safe_load(served.config.read_text())
    (model,) = [d for d in doc["applications"][0]["deployments"] if d["name"] == "MycolensModel"]
    model["user_config"] = {"model_dir": str(second), "variant": "int8"}
    new_config = served.tmp / "serve-second.yaml"
    new_config.write_text(yaml.safe_dump(doc, sort_keys=False))
    with PhotoLoad(served.base, photo, clients=4, keep=True, query="?top_k=14") as load:
        time.sleep(3)
        deployed = serve_cli("deploy", str(new_config), "--address", state.dashboard)
        assert deployed.returncode == 0, deployed.stderr[-2000:]
        wait_ready(served.base, timeout=180, version=model_version(second))
        time.sleep(3)
    # the second model stays deployed: the next test (autoscaling) deploys a config of its own
    new = answer()
    assert new["model"]["version"] == model_version(second) != old["model"]["version"]
    failed = load.failed()
    bodies = load.bodies
    mixed = [b for b in bodies if b != old and b != new]
    seen = {b["model"]["version"] for b in bodies}
    print("serve deploy:", json.dumps({"requests": len(load.answers), "failed": len(failed), "mixed": len(mixed)}))
    assert not failed, failed[:5]
    assert not mixed, mixed[:2]
    assert seen == {old["model"]["version"], new["model"]["version"]}, seen


# conf/serve/cluster.yaml with Serve's delays cut to seconds: a short ramp shows a scale-up and a scale-down
FAST_AUTOSCALING = [
    "serve=cluster",
    "serve.model.autoscaling_config.max_replicas=3",
    "serve.model.autoscaling_config.metrics_interval_s=0.5",
    "serve.model.autoscaling_config.look_back_period_s=2",
    "serve.model.autoscaling_config.upscale_delay_s=1",
    "serve.model.autoscaling_config.downscale_delay_s=4",
    # one call in flight per replica: on 2 shared cores the ingress, not the model, can be the slower side, so the
    # model sees few calls at once
    "serve.model.autoscaling_config.target_ongoing_requests=1",
]


def autoscaling_under_a_ramp(cluster, served) -> None:
    """`serve deploy` with serve=cluster (autoscaling, one replica per node); 1 -> 4 -> 16 clients (10 s each) scale the model
    deployment up, 1 client afterwards lets it drain back to 1 replica; no request fails on the way up or down.
    Runs last in its class: Serve is shut down after it."""
    import yaml

    state = current(cluster)
    doc = yaml.safe_load(served.config.read_text())
    app = doc["applications"][0]
    app["args"]["overrides"] = [*app["args"]["overrides"], *FAST_AUTOSCALING]
    config = served.tmp / "serve-autoscaling.yaml"
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    deployed = serve_cli("deploy", str(config), "--address", state.dashboard)
    assert deployed.returncode == 0, deployed.stderr[-2000:]
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and model_replica_states(state) != {"RUNNING": 1}:
        time.sleep(1)  # the redeployed app settles at min_replicas, the old replicas gone
    assert model_replica_states(state) == {"RUNNING": 1}
    wait_ready(served.base, timeout=120)

    def count() -> int:
        return sum(replicas_by_node(state, "MycolensModel").values())

    ramp = run_ramp(served.base, image_bytes(), [1, 4, 16], 10.0, count, lambda n: n == 1, settle_timeout_s=60)
    figures = ramp_figures(ramp, min_replicas=1)
    print("serve autoscaling:", json.dumps(figures))
    assert figures["peak_replicas"] >= 2 and figures["scale_up_s"] is not None, figures
    assert figures["scale_down_s"] is not None, figures
    assert figures["failed"] == 0, figures


def on_the_cluster(address: str, body: str) -> Any:
    """Run `body` in a Python driver connected to the cluster at `address` (a subprocess); the JSON of its `out`."""
    script = f"import json, ray\nray.init(address={address!r}, log_to_driver=False)\n{body}print(json.dumps(out))\n"
    done = subprocess.run([PYTHON, "-c", script], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_shared_storage_check_asks_every_node(cluster, tmp_path, tiny_shards):
    """The shared-storage check (trainer=ray and scripts/sweep.py raise its message before they start) runs a task on every node: here every
    node sees the shards (one machine), and a folder no node sees fails with one error naming the key and the nodes.
    (Nodes that see different files cannot be simulated on one machine: they share its file system.)"""
    state = current(cluster)
    gone = tmp_path / "not-mounted"
    seen = on_the_cluster(
        state.address,
        "from mycolens.utils.ray_session import unseen_paths, unshared\n"
        f"shards, gone = {str(tiny_shards)!r}, {str(gone)!r}\n"
        "out = {'nodes': len([n for n in ray.nodes() if n['Alive']]), 'unseen': unseen_paths([shards, gone])}\n"
        "out['fine'] = unshared({'paths.shards_dir': shards})\n"
        "out['error'] = unshared({'paths.shards_dir': shards, 'ray.storage_path': gone})\n",
    )
    assert seen["nodes"] == 3 and len(seen["unseen"]) == 3
    assert all(v == [str(gone)] for v in seen["unseen"].values()), seen
    assert seen["fine"] is None
    assert seen["error"].startswith(f"ray.storage_path={gone} is not visible on node(s) "), seen["error"]
    assert seen["error"].count(",") >= 2 and "paths.shards_dir" not in seen["error"]


def train_attempts(address: str, run_dir: Path) -> list[dict]:
    """Ray Train's record of the run of scripts/train.py's `run_dir` (named train-<its folder name>): its attempts in
    start order, each with its status and the node ids of its workers (Train's state actor, kept on the head node
    when RAY_TRAIN_ENABLE_STATE_TRACKING=1)."""
    (run,) = on_the_cluster(
        address,
        "from ray.train.v2._internal.state.state_actor import get_state_actor\n"
        "actor = get_state_actor()\n"
        f"ids = [i for i, r in ray.get(actor.get_train_runs.remote()).items() if r.name == 'train-{run_dir.name}']\n"
        "runs = ray.get(actor.get_train_run_attempts.remote())\n"
        "out = [[{'start': a.start_time_ns, 'status': a.status.value, 'nodes': [w.node_id for w in a.workers]}\n"
        "        for a in runs[i].values()] for i in ids]\n",
    )
    return sorted(run, key=lambda a: a["start"])


def train(tmp: Path, shards: Path, address: str, *extra: str) -> subprocess.Popen:
    """`scripts/train.py trainer=ray` with 2 SPREAD workers for 3 epochs on the cluster at `address` (a subprocess)."""
    overrides = [
        *tiny_overrides(tmp, shards),
        "trainer=ray",
        "trainer.num_workers=2",
        "trainer.placement_strategy=SPREAD",
        "trainer.max_failures=1",
        "trainer.max_epochs=3",
        "ray=cluster",
        f"ray.address={address}",
        *extra,
    ]
    log = (tmp / "train.log").open("w")
    try:
        return subprocess.Popen(
            [PYTHON, "scripts/train.py", *overrides],
            cwd=ROOT,
            env={**ENV, "RAY_TRAIN_ENABLE_STATE_TRACKING": "1"},  # Train's run/attempt records, read by train_attempts
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        log.close()


def test_ray_train_spreads_workers_over_nodes_and_survives_losing_one(cluster, tmp_path, tiny_shards):
    """2 workers SPREAD over 3 nodes land on 2 nodes; the raylet of a worker node holding one is killed after the
    first reported checkpoint; the run restarts from it on the nodes left, finishes 3 epochs, publishes
    models/best.ckpt, and tests within 2 points of the same run undisturbed."""
    state = current(cluster)
    disturbed, calm = tmp_path / "disturbed", tmp_path / "calm"
    disturbed.mkdir()
    calm.mkdir()
    proc = train(disturbed, tiny_shards, state.address)
    killed, placed = None, {}
    node_id = {name: i for i, name in node_names(state.dashboard, "state=ALIVE").items()}
    try:
        deadline = time.monotonic() + 600
        while proc.poll() is None and time.monotonic() < deadline and killed is None:
            if registered_checkpoints(disturbed / "logs" / "ray"):
                placed = train_workers_by_node(state)
                victims = [n for n in placed if n != "head"]
                if victims:
                    killed_id = node_id[victims[0]]
                    killed = local_cluster.kill_node(state, victims[0])
            time.sleep(0.2)
        assert killed is not None, f"no worker node held a Ray Train worker: {placed}"
        proc.wait(timeout=900)
    finally:
        kill_group(proc.pid)
    log = (disturbed / "train.log").read_text()
    assert proc.returncode == 0, log[-4000:]
    # the same run with nobody killed, started now: it runs while Ray's records of the disturbed run are read
    quiet = train(calm, tiny_shards, state.address)
    report = json.loads((disturbed / "reports" / "train.json").read_text())
    assert report["ray_restarted"] == 1 and "resumed from" in log, log[-3000:]
    assert report["epochs"] == 3 and (disturbed / "models" / "best.ckpt").is_file()

    # Ray Train's own record of the run: the first attempt's workers sat on two nodes, one of them the node
    # killed; the attempt that finished ran only on nodes still alive (an attempt that tried to start on the
    # dying node before Ray marked it dead may sit between them)
    names = node_names(state.dashboard)
    (run_dir,) = (disturbed / "logs" / "train" / "runs").iterdir()
    attempts = train_attempts(state.address, run_dir)
    dead = {n["node_id"] for n in ray_list("nodes", state.dashboard) if n["state"] == "DEAD"}
    seen = [(a["status"], [names.get(n, n) for n in a["nodes"]]) for a in attempts]
    first, last = attempts[0], attempts[-1]
    assert len(attempts) >= 2 and first["status"] == "ERRORED" and last["status"] == "FINISHED", seen
    assert len(set(first["nodes"])) == 2, f"SPREAD put both workers on one node: {seen}"
    assert killed_id in first["nodes"] and killed_id in dead, (killed_id, seen)
    assert len(last["nodes"]) == 2 and not set(last["nodes"]) & dead, (
        f"the finishing attempt ran on a lost node: {seen}"
    )

    # the undisturbed run: the disturbed run lost nothing that shows in the test metrics
    try:
        assert quiet.wait(timeout=900) == 0, (calm / "train.log").read_text()[-4000:]
    finally:
        kill_group(quiet.pid)
    undisturbed = json.loads((calm / "reports" / "train.json").read_text())
    print(
        "node loss:",
        json.dumps({"placed": placed, "attempts": seen, "disturbed": report, "undisturbed": undisturbed})[:3000],
    )
    assert undisturbed["ray_restarted"] == 0
    for k in ("test/accuracy", "test/macro_f1"):
        assert abs(report[k] - undisturbed[k]) <= 0.02, (k, report[k], undisturbed[k])


def sweep_trials_by_node(state: local_cluster.ClusterState) -> dict[str, list[int]]:
    """Node name -> pids of Tune trial actors (the function trainable, ImplicitFunc) under that node's raylet."""
    return local_cluster.processes_by_node(state, "ImplicitFunc")


def test_asha_sweep_survives_losing_a_node_and_its_best_config_trains(cluster, tmp_path, tiny_shards):
    """4 ASHA trials of 1 CPU, 3 at a time (one per node); once a trial on a worker node has reported its first
    epoch and checkpoint, that node's raylet is killed: the trial is retried from that checkpoint on the nodes left
    (Tune's max_failures), and the sweep finishes with every trial in results.csv, none errored. ASHA stops a
    diverging trial at its rung, and the best trial's config, written as an experiment, trains (this is the sweep
    test of the project: the same sweep on one node would add nothing but time)."""
    state = current(cluster)
    name = "nodeloss"
    sweeps = tmp_path / "sweeps"
    cmd = [
        PYTHON,
        "scripts/sweep.py",
        "sweep=asha",
        *tiny_overrides(tmp_path, tiny_shards),
        f"sweep.name={name}",
        f"sweep.storage_path={sweeps}",
        f"sweep.experiment_file={tmp_path}/conf/experiment/sweep_{name}.yaml",
        # lr=0.3 diverges: whichever of its trials reaches ASHA's rung after a 3e-3 or 1e-3 trial is stopped there
        "sweep.num_samples=1",
        "sweep.search_space.model.optimizer.lr='grid_search([3e-3, 1e-3, 0.3, 0.3])'",
        "~sweep.search_space.model.optimizer.weight_decay",
        "~sweep.search_space.model.label_smoothing",
        "sweep.metric=val/loss",  # continuous: no ties at ASHA's rung
        "sweep.mode=min",
        "sweep.max_concurrent_trials=3",
        "sweep.resources_per_trial.CPU=1",
        "sweep.max_failures=2",
        # a tiny epoch takes well under a second: 6 epochs and ASHA's one rung after epoch 4 keep the trial killed
        # after epoch 1 running (neither finished nor stopped at a rung) when its node dies
        "trainer.max_epochs=6",
        "sweep.scheduler.grace_period=4",
        "ray=cluster",
        f"ray.address={state.address}",
    ]
    log_file = tmp_path / "sweep.log"
    with log_file.open("w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    killed, placed, victim = None, {}, None
    try:
        deadline = time.monotonic() + 600
        while proc.poll() is None and time.monotonic() < deadline and killed is None:
            if checkpointed := checkpointed_trials(sweeps / name / "tune"):
                placed = sweep_trials_by_node(state)
                victims = [(n, checkpointed.get(p)) for n, pids in placed.items() if n != "head" for p in pids]
                victims = [(n, t) for n, t in victims if t is not None]
                if victims:
                    node, victim = victims[0]
                    killed = local_cluster.kill_node(state, node)
            time.sleep(0.2)
        assert killed is not None, f"no worker node ran a trial that had reported a checkpoint: {placed}"
        proc.wait(timeout=900)
    finally:
        kill_group(proc.pid)
    log = log_file.read_text()
    assert proc.returncode == 0, log[-4000:]
    import pandas as pd

    table = pd.read_csv(sweeps / name / "results.csv", keep_default_na=False)
    history = pd.read_csv(sweeps / name / "history.csv")
    summary = json.loads((sweeps / name / "summary.json").read_text())
    retried = sweep_retries(sweeps / name / "tune")
    print("sweep node loss:", json.dumps({"placed": placed, "retried": retried, "summary": summary})[:2000])
    print(table[["trial_id", "epochs", "stopped_early", "error"]].to_string())
    assert len(table) == 4 and set(table["error"]) == {""}, table.to_string()
    assert victim in retried, (victim, retried)
    # the killed trial went on from its checkpoint: every epoch reported once, and past the one it had reached
    epochs = history.loc[history["trial_id"] == victim, "training_iteration"].tolist()
    assert epochs == list(range(1, len(epochs) + 1)), (victim, epochs)

    # what the sweep leaves: ranked results, the best trial's checkpoint, a plot, and the best config as an experiment
    assert summary["trials"] == 4 and not summary["resumed"]
    assert table["stopped_early"].any() and (table["epochs"] < 6).any(), table.to_string()
    assert summary["best"]["trial_id"] == table.iloc[0]["trial_id"]
    assert [o.split("=")[0] for o in summary["best"]["overrides"]] == ["model.optimizer.lr"]
    assert (sweeps / name / "best.ckpt").is_file() and (sweeps / name / "results.png").stat().st_size > 1000
    assert set(history["trial_id"]) == set(table["trial_id"])
    experiment = tmp_path / "conf" / "experiment" / f"sweep_{name}.yaml"
    assert experiment.read_text().startswith("# @package _global_")
    trained = subprocess.run(
        [
            PYTHON,
            "scripts/train.py",
            f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
            f"experiment=sweep_{name}",
            "debug=fdr",
            *[o for o in tiny_overrides(tmp_path, tiny_shards) if o.startswith("paths.")],
        ],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert trained.returncode == 0 and "run folder:" in trained.stdout, trained.stdout[-3000:] + trained.stderr[-3000:]


def checkpointed_trials(tune_dir: Path) -> dict[int, str | None]:
    """Trial actor pid -> trial id, for the trials that have reported exactly one epoch and its checkpoint (Tune's
    result.json has the pid); pids of other trials map to None."""
    out: dict[int, str | None] = {}
    for trial in tune_dir.glob("trial_*"):
        try:
            last = json.loads((trial / "result.json").read_text().splitlines()[-1])
        except (OSError, IndexError, ValueError):  # not reported yet, or a line being written
            continue
        first_epoch = last.get("training_iteration") == 1 and any(trial.glob("checkpoint_*"))
        out[int(last["pid"])] = last["trial_id"] if first_epoch else None
    return out


def sweep_retries(tune_dir: Path) -> list[str]:
    """Trial ids Tune records as having failed at least once (its experiment state: num_failures)."""
    (state_file,) = sorted(tune_dir.glob("experiment_state-*.json"))[-1:]
    state = json.loads(state_file.read_text())
    retried = []
    for trial_json, run_json in state["trial_data"]:  # Tune's (trial state, run metadata) pairs
        if int(json.loads(run_json).get("num_failures", 0)) > 0:
            retried.append(json.loads(trial_json)["trial_id"])
    return retried
