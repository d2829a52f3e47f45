"""params.yaml, DVC's view of conf/: composed like `dvc exp run` does, kept in step with conf/ for `dvc repro`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf, open_dict

from mycolens.utils.io import write_bytes_atomic
from mycolens.utils.paths import repo_root

_DELETE = object()


def compose_config(
    overrides: Sequence[str] | None = None,
    conf_dir: str | Path | None = None,
    config_name: str = "config",
    return_hydra_config: bool = False,
) -> DictConfig:
    """conf/<config_name>.yaml composed with Hydra `overrides`, unresolved; inside a Hydra app, in its search path.

    conf_dir: the config folder (default: conf/ of repo_root(env=False), as DVC composes: MYCOLENS_ROOT aside).
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    args = {"config_name": config_name, "overrides": list(overrides or []), "return_hydra_config": return_hydra_config}
    if GlobalHydra.instance().is_initialized():  # inside a Hydra app (or a Tune actor) whose search path is conf/
        return compose(**args)
    folder = Path(conf_dir) if conf_dir is not None else repo_root(env=False) / "conf"
    with initialize_config_dir(str(folder.resolve()), version_base="1.3"):
        return compose(**args)


def compose_params(conf_dir: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Compose conf/config.yaml exactly as DVC's Hydra support does (resolved, relative paths)."""
    saved = os.environ.pop("MYCOLENS_ROOT", None)  # DVC composes without it: keep params.yaml portable
    try:
        cfg = compose_config(overrides, conf_dir)
        OmegaConf.resolve(cfg)
        return OmegaConf.to_container(cfg)  # type: ignore[return-value]
    finally:
        if saved is not None:
            os.environ["MYCOLENS_ROOT"] = saved


def dump(params: dict[str, Any]) -> str:
    return OmegaConf.to_yaml(OmegaConf.create(params))


def sync_params_file(conf_dir: str | Path, params_path: str | Path) -> bool:
    """Rewrite params.yaml from conf/ when it differs; returns True if it was rewritten."""
    text = dump(compose_params(conf_dir))
    path = Path(params_path)
    if path.is_file() and path.read_text() == text:
        return False
    write_bytes_atomic(path, text.encode())
    return True


def params_diff(base: Any, new: Any) -> dict[tuple[str, ...], Any]:
    """Leaf changes turning `base` into `new`: {key path: value or _DELETE}."""
    if isinstance(base, dict) and isinstance(new, dict):
        out: dict[tuple[str, ...], Any] = {}
        for key in sorted(set(base) | set(new), key=str):
            if key not in new:
                out[(key,)] = _DELETE
            elif key not in base:
                out[(key,)] = new[key]
            else:
                out.update({(key, *k): v for k, v in params_diff(base[key], new[key]).items()})
        return out
    return {} if base == new else {(): new}


def apply_params_file(cfg: DictConfig, conf_dir: str | Path, params_path: str | Path) -> list[str]:
    """Apply to `cfg` what params.yaml changes relative to conf/ (the `dvc exp run -S` overrides); list them."""
    path = Path(params_path)
    if not path.is_file():
        return []
    changes = params_diff(compose_params(conf_dir), yaml.safe_load(path.read_text()) or {})
    applied = []
    with open_dict(cfg):
        for keys, value in changes.items():
            dotted = ".".join(map(str, keys))
            if keys[0] in ("paths", "dvc_params"):
                continue  # locations come from this checkout, not from where params.yaml was composed
            if value is _DELETE:
                parent = OmegaConf.select(cfg, ".".join(map(str, keys[:-1]))) if len(keys) > 1 else cfg
                if parent is not None and keys[-1] in parent:
                    del parent[keys[-1]]
            else:
                OmegaConf.update(cfg, dotted, value, force_add=True, merge=False)
            applied.append(dotted)
    return applied
