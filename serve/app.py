"""The Ray Serve application: a FastAPI ingress and an ONNX Runtime model deployment with dynamic batching.

Start it with `python scripts/serve.py` (`make serve`: `serve run serve/config.yaml` with conf/serve's HAProxy front)
or `serve deploy serve/config.yaml` on a cluster. Settings come from conf/serve (composed with Hydra; overrides in
the Serve config's `args.overrides`); the model folder and variant are the model deployment's `user_config`, so a
changed config swaps the model in place through `reconfigure()`.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI
from ray import serve
from ray.serve.config import DeploymentActorConfig
from ray.serve.handle import DeploymentHandle

from mycolens.inference.onnx_model import ModelRefused
from mycolens.serving.api import build_api
from mycolens.serving.errors import ApiError
from mycolens.serving.grouping import Grouper
from mycolens.serving.hooks import IngressContext, PredictionHooks
from mycolens.serving.images import answer_photos
from mycolens.serving.metrics import ServeMetrics
from mycolens.serving.model import ModelControl, ModelRunner
from mycolens.serving.settings import Limits, ServeSettings, ort_threads, resolve_path
from serve.front import grpc_message_bytes

log = logging.getLogger("ray.serve")
ROOT = Path(__file__).resolve().parents[1]
STATIC = ROOT / "serve" / "static"
DEPLOYMENT_KEYS = (
    "name",
    "num_replicas",
    "max_ongoing_requests",
    "autoscaling_config",
    "ray_actor_options",
    "health_check_period_s",
    "graceful_shutdown_timeout_s",
)


def load_serve_config(overrides: list[str] | None = None) -> dict[str, Any]:
    """The resolved `serve` section of conf/config.yaml, with Hydra overrides (e.g. "serve.variant=fp32")."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides or []))
    GlobalHydra.instance().clear()
    out = OmegaConf.to_container(cfg.serve, resolve=True)
    assert isinstance(out, dict)
    return out


def deployment_options(section: dict[str, Any]) -> dict[str, Any]:
    """Serve deployment options from a config section (autoscaling_config replaces num_replicas)."""
    opts = {k: section[k] for k in DEPLOYMENT_KEYS if section.get(k) is not None}
    if opts.get("autoscaling_config"):
        opts.pop("num_replicas", None)
    return opts


def images_in(groups: list[list[np.ndarray]]) -> int:
    """Images in a list of ingress groups: the model's @serve.batch counts images, not calls."""
    return sum(len(g) for g in groups)


@serve.deployment(name="MycolensModel")
class MycolensModel:
    """Photo decode (a thread pool) and ONNX Runtime behind @serve.batch; the model folder comes from user_config.

    Decoding here, not in the ingress, keeps the ingress's one Python thread for HTTP and cuts crops at the input
    size of the model this replica runs; the model folder can also be swapped by POST /admin/reload.
    """

    def __init__(
        self,
        threads: int,
        max_batch_size: int,
        batch_wait_timeout_s: float,
        control_poll_s: float,
        limits: Limits,
        decode_threads: int,
        min_batch_size: int = 1,
    ) -> None:
        self.runner = ModelRunner(threads)
        self.limits = limits
        self.pool = ThreadPoolExecutor(max(1, int(decode_threads)), thread_name_prefix="mycolens-decode")
        self.min_batch_size = int(min_batch_size)  # the ingress's group size: a smaller batch could not take one
        self.run_batch.set_max_batch_size(max(int(max_batch_size), self.min_batch_size))
        self.run_batch.set_batch_wait_timeout_s(float(batch_wait_timeout_s))
        self.control_poll_s = float(control_poll_s)
        self.generation = -1
        self.config: dict[str, str] | None = None
        self._lock = asyncio.Lock()
        self._watch: asyncio.Task | None = None

    # ---------------------------------------------------------------- model lifecycle

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Load the configured model folder; a refused folder keeps the current model (fails only the first load)."""
        batch = user_config.get("batch") or {}
        if "max_batch_size" in batch:
            size = int(batch["max_batch_size"])
            if size < self.min_batch_size:
                log.warning(
                    "batch.max_batch_size %d < the ingress group size %d; using the latter", size, self.min_batch_size
                )
            self.run_batch.set_max_batch_size(max(size, self.min_batch_size))
        if "batch_wait_timeout_s" in batch:
            self.run_batch.set_batch_wait_timeout_s(float(batch["batch_wait_timeout_s"]))
        self.config = {
            "model_dir": str(resolve_path(user_config["model_dir"])),
            "variant": str(user_config["variant"]),  # serve/config.yaml sets it (tested equal to conf/serve)
        }
        key = json.dumps(self.config, sort_keys=True)
        state = await self._control_call("offer_config", key, self.config["model_dir"], self.config["variant"])
        desired = (state or {}).get("desired") or self.config
        await self._apply(desired, (state or {}).get("generation", 0))
        if self._watch is None:
            self._watch = asyncio.get_running_loop().create_task(self._watch_control())

    async def _apply(self, desired: dict[str, str], generation: int) -> None:
        async with self._lock:
            candidates = [desired] + (
                [self.config] if self.config and desired != self.config and self.runner.current is None else []
            )
            for want in candidates:
                try:
                    await asyncio.to_thread(self.runner.load, want["model_dir"], want["variant"])
                    break
                except ModelRefused as exc:
                    log.error(
                        "model refused, %s: %s",
                        "keeping the current model" if self.runner.current else "no model to serve",
                        exc,
                    )
            if self.runner.current is None:
                raise ModelRefused(self.runner.last_error or "no model")
            self.generation = generation

    async def _control_call(self, method: str, *args: Any) -> dict[str, Any] | None:
        """Call the deployment-scoped control actor; None when it is unavailable (config-only mode)."""
        try:
            actor = serve.get_deployment_actor("control")
            return await getattr(actor, method).remote(*args)
        except Exception as exc:
            log.warning("model control actor unavailable (%s); following user_config only", exc.__class__.__name__)
            return None

    async def _watch_control(self) -> None:
        """Pick up a model set by POST /admin/reload on another replica."""
        while True:
            await asyncio.sleep(self.control_poll_s)
            state = await self._control_call("get")
            if state and state.get("desired") and state["generation"] != self.generation:
                try:
                    await self._apply(state["desired"], state["generation"])
                except ModelRefused:
                    self.generation = state["generation"]

    async def set_model(self, model_dir: str, variant: str) -> dict[str, Any]:
        """Load a folder here (refused: old model stays), then make it every replica's model."""
        path = str(resolve_path(model_dir))
        async with self._lock:
            try:
                info = await asyncio.to_thread(self.runner.load, path, variant)
            except ModelRefused as exc:
                return {"ok": False, "error": str(exc)}
        state = await self._control_call("set", path, variant)
        if state is not None:
            self.generation = state["generation"]
        return {"ok": True, "info": info}

    async def check_health(self) -> None:
        if self.runner.current is None:
            raise RuntimeError(self.runner.last_error or "no model loaded")

    # ---------------------------------------------------------------- inference

    async def predict(self, photos: list[bytes], top_ks: list[int]) -> list[dict[str, Any]]:
        """Answers for one ingress group of photo bytes; a bad photo's entry is {"error": {status, code, message}}.

        Groups decode concurrently (the pool) while earlier ones are in run_batch, so decode and inference overlap.
        """
        size = self.runner.require().image_size
        return await answer_photos(photos, top_ks, size, self.limits, self.pool, self.run_batch)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.003, batch_size_fn=images_in)
    async def run_batch(self, groups: list[list[np.ndarray]], top_ks: list[list[int]]) -> list[list[dict[str, Any]]]:
        """One ONNX Runtime run for the uint8 crops of several groups (in a thread: the replica keeps queueing)."""
        images = [img for g in groups for img in g]
        results = await asyncio.to_thread(self.runner.predict, images, [k for ks in top_ks for k in ks])
        for i, r in enumerate(results):
            r["batch_first"] = i == 0
        out, start = [], 0
        for g in groups:
            out.append(results[start : start + len(g)])
            start += len(g)
        return out

    async def infer(self, x: np.ndarray) -> dict[str, Any]:
        """Probabilities and logits of a preprocessed FP32 NCHW tensor (v2 protocol)."""
        return await asyncio.to_thread(self.runner.infer, x)

    async def info(self) -> dict[str, Any]:
        return {**self.runner.info(), "replica": {"pid": os.getpid(), "generation": self.generation}}


class ServeBackend:
    """The ingress's way to the model deployment: concurrent photos go as one call (a group), retried if a replica died.

    Grouping here matters on small machines: each deployment call costs far more CPU than the model's work on one
    image, so the ingress sends one call per group (mycolens.serving.grouping) and the model batches groups again.
    """

    UNAVAILABLE = (
        "RayActorError",
        "ActorDiedError",
        "ActorUnavailableError",
        "BackPressureError",
        "DeploymentUnavailableError",
    )

    def __init__(
        self, handle: DeploymentHandle, wait_s: float, group_size: int, group_wait_s: float, retries: int = 3
    ) -> None:
        self.handle, self.wait_s, self.retries = handle, wait_s, retries
        self._group = Grouper(self._send_group, max(1, int(group_size)), group_wait_s)  # size 1: sent at once

    async def _call(self, method: str, *args: Any) -> Any:
        for attempt in range(self.retries + 1):
            try:
                return await getattr(self.handle, method).remote(*args)
            except Exception as exc:
                names = {c.__name__ for c in type(exc).__mro__}
                if not names & set(self.UNAVAILABLE):
                    raise
                if attempt == self.retries:
                    raise ApiError(
                        503, "model_unavailable", f"model deployment unavailable ({type(exc).__name__}); retry shortly"
                    ) from None
                await asyncio.sleep(0.1 * (attempt + 1))
        raise AssertionError("unreachable")

    async def _send_group(self, calls: list[tuple[bytes, int]]) -> list[dict[str, Any]]:
        return await self._call("predict", [photo for photo, _ in calls], [k for _, k in calls])

    async def predict(self, photo: bytes, top_k: int) -> dict[str, Any]:
        return await self._group(photo, top_k)

    async def infer(self, x: np.ndarray) -> dict[str, Any]:
        return await self._call("infer", x)

    async def info(self) -> dict[str, Any]:
        return await self._call("info")

    async def reload(self, model_dir: str, variant: str) -> dict[str, Any]:
        """Swap the model on every replica; returns once replicas answer with the new version (or wait_s passed)."""
        result = await self._call("set_model", model_dir, variant)
        if not result["ok"]:
            raise ModelRefused(result["error"])
        version, streak = result["info"]["version"], 0
        deadline = asyncio.get_running_loop().time() + self.wait_s
        while streak < 8 and asyncio.get_running_loop().time() < deadline:
            streak = streak + 1 if (await self.info())["version"] == version else 0
            await asyncio.sleep(0.05)
        return result["info"]


def _web_module() -> Any | None:
    """serve/web.py (the page, drift and feedback routes) when it exists."""
    if not (ROOT / "serve" / "web.py").is_file():
        return None
    return importlib.import_module("serve.web")


@serve.deployment(name="MycolensIngress")
@serve.ingress()
class MycolensIngress:
    """FastAPI ingress (mycolens.serving.api.build_api) in front of the model deployment."""

    def __init__(self, model: DeploymentHandle, config: dict[str, Any]) -> None:
        # A handle made here follows this cluster's Serve settings (gRPC between deployments when throughput-optimized);
        # the bound one carries the settings of whichever process built the app (a test, a notebook).
        self.model, self.config = serve.get_deployment_handle(model.deployment_name, model.app_name), config

    def __serve_build_asgi_app__(self) -> FastAPI:
        settings = ServeSettings.from_config(self.config)
        metrics = ServeMetrics()
        hooks = PredictionHooks(
            settings.hook_queue_size, on_error=metrics.hook_errors.inc, on_drop=metrics.hook_dropped.inc
        )
        ctx = IngressContext(
            config=self.config, root=ROOT, metrics_registry=metrics.registry, hooks=hooks, model_info=None
        )  # type: ignore[arg-type]
        web = _web_module()
        routers = [web.router] if web is not None and hasattr(web, "router") else []
        setups = [web.setup] if web is not None and hasattr(web, "setup") else []
        group = self.config["ingress"]["group"]
        backend = ServeBackend(self.model, settings.reload_wait_s, group["max_size"], group["wait_s"])
        return build_api(settings, backend, ctx, metrics, static_dir=STATIC, routers=routers, setups=setups)


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


def serve_control_actor() -> Any:
    import ray

    return ray.remote(ModelControl)
