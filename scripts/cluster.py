"""A Ray cluster of several nodes on this machine: `python scripts/cluster.py action=up|down|status`.

`up` starts a head and worker nodes (each its own raylet with its own CPUs, conf/cluster.yaml) and prints the
address for `ray=cluster`; `down` stops every process `up` started, by pid. Token authentication stays on: clients
need RAY_AUTH_MODE=token (printed with the address).
"""

import hydra
from omegaconf import DictConfig

from mycolens.cli import quiet_environment, task

quiet_environment()


@hydra.main(version_base="1.3", config_path="../conf", config_name="cluster")
@task
def main(cfg: DictConfig) -> None:
    import os
    from pathlib import Path

    from mycolens.cli import UserError
    from mycolens.utils import local_cluster

    c = cfg.cluster
    state_file = Path(c.state_file)
    os.environ["RAY_AUTH_MODE"] = "token"  # Ray 2.60 enables token auth on `ray start`; its CLI must agree
    if cfg.action == "up":
        try:
            state = local_cluster.up(
                state_file,
                Path(c.temp_dir),
                nodes=int(c.nodes),
                cpus_per_node=int(c.cpus_per_node),
                object_store_bytes=int(c.object_store_mb) * 2**20,
                timeout_s=float(c.start_timeout_s),
                ray_config=dict(c.get("ray_config") or {}),
            )
        except RuntimeError as exc:
            raise UserError(str(exc)) from None
        for node in state.nodes:
            print(f"{node.name}: pid {node.pid}, {node.cpus} CPU")
        print(f"dashboard and state API: {state.dashboard}")
        print(f"export RAY_AUTH_MODE=token RAY_ADDRESS={state.address}")
        print(f"python scripts/train.py trainer=ray ray=cluster ray.address={state.address}")
    elif cfg.action == "down":
        stopped = local_cluster.down(state_file, grace_s=float(c.stop_grace_s))
        print(f"stopped {len(stopped)} processes" if stopped else f"no cluster is up ({state_file} is absent)")
    elif cfg.action == "status":
        if not state_file.exists():
            print(f"no cluster is up ({state_file} is absent)")
            return
        state = local_cluster.ClusterState.read(state_file)
        print(f"address {state.address}: " + ", ".join(f"{n.name} (pid {n.pid})" for n in state.nodes))
    else:
        raise UserError(f"action={cfg.action}: use up, down or status")


if __name__ == "__main__":
    main()
