"""The Ray Serve application: a FastAPI ingress and an ONNX Runtime model deployment with dynamic batching.

Start it with `python scripts/serve.py` (`make serve`: `serve run serve/config.yaml` with conf/serve's HAProxy front)
or `serve deploy serve/config.yaml` on a cluster. Settings come from conf/serve (composed with Hydra; overrides in
the Serve config's `args.overrides`); the model folder and variant are the model deployment's `user_config`, so a
changed config swaps the model in place through `reconfigure()`.

This module is the import path the Serve config names (`serve.app:build_app`); the parts live beside it:
serve/config.py (the composed `serve` section), serve/deployments.py (the deployments), serve/reload.py (model reload).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from ray import serve
from ray.serve.config import DeploymentActorConfig

from mycolens.serving.settings import ServeSettings, ort_threads
from serve.config import DEPLOYMENT_KEYS, deployment_options, load_serve_config
from serve.deployments import MycolensIngress, MycolensModel, ServeBackend, images_in
from serve.front import grpc_message_bytes
from serve.reload import serve_control_actor

__all__ = [
    "DEPLOYMENT_KEYS",
    "MycolensIngress",
    "MycolensModel",
    "ServeBackend",
    "build_app",
    "deployment_options",
    "images_in",
    "load_serve_config",
    "serve_control_actor",
]
log = logging.getLogger("ray.serve")


def build_app(args: dict[str, Any] | None = None) -> serve.Application:
    """Application builder for the Serve config (`import_path: serve.app:build_app`); args: {overrides: [...]}."""
    args = dict(args or {})
    cfg = load_serve_config(args.get("overrides"))
    if cfg["proxy"] == "haproxy" and os.environ.get("RAY_SERVE_ENABLE_HA_PROXY") != "1":
        log.warning(
            "conf/serve proxy is haproxy, but this Ray started without RAY_SERVE_ENABLE_HA_PROXY=1, so Serve's slower "
            "Python proxy answers; start with `python scripts/serve.py` (make serve) for the HAProxy front"
        )
    grpc_limit = int(os.environ.get("RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH", 4 * 2**20))
    if os.environ.get("RAY_SERVE_THROUGHPUT_OPTIMIZED") == "1" and grpc_limit < grpc_message_bytes(cfg):
        log.warning(
            "RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH=%d is below a group of photos at the body limit (%d bytes): "
            "large photos will fail; start with `python scripts/serve.py`, which sets it",
            grpc_limit,
            grpc_message_bytes(cfg),
        )
    m = cfg["model"]
    settings = ServeSettings.from_config(cfg)
    model = MycolensModel.options(
        **deployment_options(m),
        user_config={"model_dir": cfg["model_dir"], "variant": cfg["variant"]},
        deployment_actors=[
            DeploymentActorConfig(name="control", actor_class=serve_control_actor(), actor_options={"num_cpus": 0})
        ],
    ).bind(
        ort_threads(m.get("threads"), (m.get("ray_actor_options") or {}).get("num_cpus")),
        cfg["batch"]["max_batch_size"],
        cfg["batch"]["batch_wait_timeout_s"],
        m["control_poll_s"],
        settings.limits,
        settings.decode_threads,
        cfg["ingress"]["group"]["max_size"],
    )
    return MycolensIngress.options(**deployment_options(cfg["ingress"])).bind(model, cfg)
