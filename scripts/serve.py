"""Start the Ray Serve app on 127.0.0.1 with the HTTP front of conf/serve: `python scripts/serve.py` (`make serve`).

Serve takes its front (HAProxy or its Python proxy) from the environment Ray starts with, so this sets that
environment (serve.front) and runs `serve run` on serve/config.yaml. Other `serve.*` overrides
(e.g. `serve.variant=fp32`, `serve.batch.max_batch_size=32`) go into a copy of that file in the run folder.
`serve.proxy=python` picks Serve's Python proxy; plain `serve run serve/config.yaml` also works, with the Python
proxy unless RAY_SERVE_ENABLE_HA_PROXY=1 is set.
"""

import os
import sys
from pathlib import Path

import hydra
import yaml
from omegaconf import DictConfig, OmegaConf

from mycolens.cli import quiet_environment, task
from mycolens.utils.paths import repo_root

quiet_environment()
ROOT = repo_root(env=False)
CONFIG = ROOT / "serve" / "config.yaml"
sys.path.insert(0, str(ROOT))  # serve/ (the Serve app and its front) lives beside the package, at the edge


def serve_config(base: dict, overrides: list[str], model_dir: str | None, variant: str | None) -> dict:
    """serve/config.yaml with the command line's overrides added to the app's and its model set in user_config."""
    app = base["applications"][0]
    args = app.setdefault("args", {})
    args["overrides"] = [*(args.get("overrides") or []), *overrides]
    for dep in app.get("deployments", []):
        if "user_config" in dep:
            if model_dir is not None:
                dep["user_config"]["model_dir"] = model_dir
            if variant is not None:
                dep["user_config"]["variant"] = variant
    return base


@hydra.main(version_base="1.3", config_path="../conf", config_name="serve")
@task
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from mycolens.utils.io import write_bytes_atomic
    from serve.front import front_env, grpc_message_bytes

    given = [o for o in HydraConfig.get().overrides.task if o.lstrip("+~").startswith("serve.")]
    config = CONFIG
    if given:
        keys = {o.lstrip("+~").split("=", 1)[0] for o in given}
        base = yaml.safe_load(CONFIG.read_text())
        edited = serve_config(
            base,
            given,
            str(cfg.serve.model_dir) if "serve.model_dir" in keys else None,
            str(cfg.serve.variant) if "serve.variant" in keys else None,
        )
        config = write_bytes_atomic(Path(cfg.paths.output_dir) / "serve_config.yaml", yaml.safe_dump(edited).encode())
    serve_cfg = OmegaConf.to_container(cfg.serve, resolve=True)
    env = {**os.environ, **front_env(str(cfg.serve.proxy), ROOT, max_message_bytes=grpc_message_bytes(serve_cfg))}
    serve_bin = Path(sys.executable).with_name("serve")
    print(f"$ serve run {config}  ({cfg.serve.proxy} front, http://{cfg.serve.host}:{cfg.serve.port})", flush=True)
    os.chdir(ROOT)  # the config's import_path (serve.app) and relative model folder are from the repository root
    os.execve(serve_bin, [str(serve_bin), "run", str(config)], env)


if __name__ == "__main__":
    main()
