"""Compose conf/ into params.yaml (DVC's view of the config), as `dvc exp run` does; a no-op inside `dvc exp run`."""

import os

from mycolens.params import sync_params_file
from mycolens.utils.paths import repo_root

ROOT = repo_root(env=False)  # params.yaml is composed without MYCOLENS_ROOT (see compose_params)

if __name__ == "__main__":
    if os.environ.get("DVC_EXP_NAME"):
        print("params.yaml: composed by `dvc exp run` with its -S overrides; kept")
    else:
        changed = sync_params_file(ROOT / "conf", ROOT / "params.yaml")
        print("params.yaml: rewritten from conf/" if changed else "params.yaml: up to date with conf/")
