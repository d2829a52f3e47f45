"""The `serve` config section (conf/serve, composed with Hydra) and the Serve deployment options it holds."""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

from mycolens.params import compose_config
from mycolens.utils.paths import repo_root

DEPLOYMENT_KEYS = (
    "name",
    "num_replicas",
    "max_ongoing_requests",
    "autoscaling_config",
    "max_replicas_per_node",
    "ray_actor_options",
    "health_check_period_s",
    "graceful_shutdown_timeout_s",
)


def load_serve_config(overrides: list[str] | None = None) -> dict[str, Any]:
    """The resolved `serve` section of conf/config.yaml, with Hydra overrides (e.g. "serve.variant=fp32")."""
    cfg = compose_config(overrides, repo_root() / "conf")
    out = OmegaConf.to_container(cfg.serve, resolve=True)
    assert isinstance(out, dict)
    return out


def deployment_options(section: dict[str, Any]) -> dict[str, Any]:
    """Serve deployment options from a config section (autoscaling_config replaces num_replicas)."""
    opts = {k: section[k] for k in DEPLOYMENT_KEYS if section.get(k) is not None}
    if opts.get("autoscaling_config"):
        opts.pop("num_replicas", None)
    return opts
