"""Serving autoscaling on a Ray cluster of several nodes simulated on this machine (src/mycolens/utils/local_cluster.py).

Starts a cluster (--nodes x 1 CPU), deploys the app with `serve=cluster` (conf/serve/cluster.yaml: autoscaling, one
model replica per node) through the `serve` CLI, and posts one photo with a load ramp of 1, 2, 4, 8, 16 clients
(--step-s each; a 640x480 JPEG), then 1 client until Serve has scaled back to min_replicas. Model replicas are counted from the
process tree every 0.5 s. Prints one JSON object as its LAST line: time to scale up, peak replicas, answers/s per
replica at the top step, time to scale down, failed requests; writes reports/serve_cluster.png (replicas, clients
and answers/s over time). Example:
    .venv/bin/python benchmarks/serve_cluster.py --step-s 10
Without models/export/model.json (or --model-dir) it stops and says to run `make demo` first.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from mycolens.utils.paths import repo_root

ROOT = repo_root(env=False)
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MYCOLENS_ROOT", str(ROOT))
os.environ["RAY_AUTH_MODE"] = "token"  # the nodes `ray start` run with token auth; the serve CLI must agree
MODEL = "MycolensModel"


def serve_config(path: Path, port: int, model_dir: Path, overrides: list[str]) -> Path:
    """serve/config.yaml on `port` with `overrides`, fitted to the simulated cluster (one proxy, ingress on the head)."""
    from mycolens.utils.local_cluster import serve_config_for

    doc = yaml.safe_load((ROOT / "serve" / "config.yaml").read_text())
    doc["http_options"] = {"host": "127.0.0.1", "port": port}
    app = doc["applications"][0]
    app["args"] = {"overrides": overrides}
    app["deployments"] = [{"name": MODEL, "user_config": {"model_dir": str(model_dir), "variant": "int8"}}]
    path.write_text(yaml.safe_dump(serve_config_for(doc), sort_keys=False))
    return path


def serve_cli(*args: str, timeout: float = 300) -> None:
    done = subprocess.run(
        [str(Path(sys.executable).with_name("serve")), *args], capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        raise RuntimeError(f"serve {args[0]} failed:\n{done.stderr[-3000:]}")


def plot(ramp: Any, figures: dict[str, Any], out: Path) -> None:
    """Replicas and clients (left axis) and answers/s (right axis) over the run; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mycolens.serving.loadgen import answered_per_second

    seconds = int(ramp.end - ramp.t0) + 1
    rate = answered_per_second(ramp.answers, ramp.t0, seconds)
    fig, ax = plt.subplots(figsize=(9, 4.2))
    ax.step(
        [t - ramp.t0 for t, _ in ramp.replicas],
        [n for _, n in ramp.replicas],
        where="post",
        lw=2,
        label="model replicas",
    )
    steps = [*ramp.steps, (ramp.end, 0)]
    ax.step([t - ramp.t0 for t, _ in steps], [n for _, n in steps], where="post", ls="--", c="grey", label="clients")
    ax.set_xlabel("seconds")
    ax.set_ylabel("replicas / clients")
    ax.axvline(ramp.top_ended - ramp.t0, c="grey", lw=0.8, ls=":")
    right = ax.twinx()
    right.plot(range(seconds), rate, c="tab:orange", alpha=0.8, label="answers/s")
    right.set_ylabel("answers/s")
    lines = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    ax.legend(lines, [ln.get_label() for ln in lines], loc="upper left", fontsize=8)
    ax.set_title(
        f"Serve autoscaling on {figures['nodes']} simulated nodes: up in {figures['scale_up_s']} s, "
        f"peak {figures['peak_replicas']}, down {figures['scale_down_s']} s after the ramp, {figures['failed']} failed",
        fontsize=9,
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", default=str(ROOT / "models" / "export"))
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--clients", default="1,2,4,8,16", help="the ramp: clients per step")
    ap.add_argument("--step-s", type=float, default=10.0)
    ap.add_argument("--settle-timeout-s", type=float, default=120.0)
    ap.add_argument("--plot", default=str(ROOT / "reports" / "serve_cluster.png"))
    ap.add_argument(
        "--override",
        action="append",
        default=[],
        help="more Hydra overrides of the served app (e.g. serve.model.autoscaling_config.downscale_delay_s=30)",
    )
    args = ap.parse_args()
    model_dir = Path(args.model_dir).resolve()
    if not (model_dir / "model.json").is_file():
        raise SystemExit(f"no model folder at {model_dir}: run `make demo` (or scripts/export.py), or give --model-dir")

    from benchmarks.serve_throughput import photos
    from mycolens.serving.loadgen import ramp_figures, run_ramp
    from mycolens.utils import local_cluster
    from serve.config import load_serve_config
    from serve.local import free_port, wait_ready

    overrides = [
        f"serve.model_dir={model_dir}",
        "serve=cluster",
        "serve.model.ray_actor_options.num_cpus=0.5",  # nodes have 1 CPU; a replica per node leaves room for Serve
        # Serve's delays cut so the ramp fits a minute (conf/serve/cluster.yaml has the production values)
        "serve.model.autoscaling_config.upscale_delay_s=1",
        "serve.model.autoscaling_config.downscale_delay_s=5",
        "serve.model.autoscaling_config.look_back_period_s=2",
        "serve.model.autoscaling_config.metrics_interval_s=0.5",
        f"serve.model.autoscaling_config.max_replicas={args.nodes}",
        *args.override,
    ]
    autoscaling = load_serve_config(overrides)["model"]["autoscaling_config"]
    tmp = Path(tempfile.mkdtemp(prefix="mcb", dir="/tmp"))  # short: Ray's socket paths must stay under 107 bytes
    state_file = tmp / "state.json"
    print(f"starting {args.nodes} nodes ...", flush=True)
    state = local_cluster.up(state_file, tmp / "ray", nodes=args.nodes, cpus_per_node=1, object_store_bytes=80 * 2**20)
    try:
        port = free_port()
        config = serve_config(tmp / "serve.yaml", port, model_dir, overrides)
        serve_cli("run", str(config), "--non-blocking", "--address", state.address)
        base = f"http://127.0.0.1:{port}"
        wait_ready(base, timeout=300)

        def count() -> int:
            return sum(
                len(p) for p in local_cluster.processes_by_node(state, f"ServeReplica:mycolens:{MODEL}").values()
            )

        min_replicas = int(autoscaling["min_replicas"])
        while count() != min_replicas:
            time.sleep(0.5)
        steps = [int(n) for n in args.clients.split(",")]
        print(f"ramp {steps} x {args.step_s:.0f} s, then 1 client until {min_replicas} replica(s) ...", flush=True)
        ramp = run_ramp(
            base,
            photos(1, 640, 480)[0],
            steps,
            args.step_s,
            count,
            lambda n: n <= min_replicas,
            settle_timeout_s=args.settle_timeout_s,
        )
        figures = {"nodes": args.nodes, **ramp_figures(ramp, min_replicas)}
        plot(ramp, figures, Path(args.plot))
    finally:
        local_cluster.down(state_file)
    result = {
        "benchmark": "serve_cluster",
        "date": time.strftime("%Y-%m-%d"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "model": str(model_dir),
        "autoscaling_config": autoscaling,
        "step_s": args.step_s,
        **figures,
        "plot": args.plot,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
