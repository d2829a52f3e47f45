"""The two Ray Serve deployments: the ONNX Runtime model (decode, @serve.batch) and the FastAPI ingress in front."""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from fastapi import FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle

from mycolens.inference.onnx_model import ModelRefused
from mycolens.serving.api import build_api
from mycolens.serving.errors import ApiError
from mycolens.serving.grouping import Grouper
from mycolens.serving.hooks import IngressContext, PredictionHooks
from mycolens.serving.images import answer_photos
from mycolens.serving.metrics import ServeMetrics
from mycolens.serving.model import ModelRunner
from mycolens.serving.settings import Limits, ServeSettings
from mycolens.utils.paths import repo_root
from serve.reload import ModelReload

log = logging.getLogger("ray.serve")


def images_in(groups: list[list[np.ndarray]]) -> int:
    """Images in a list of ingress groups: the model's @serve.batch counts images, not calls."""
    return sum(len(g) for g in groups)


@serve.deployment(name="MycolensModel")
class MycolensModel(ModelReload):
    """Photo decode (a thread pool) and ONNX Runtime behind @serve.batch; the model folder comes from user_config.

    Decoding here, not in the ingress, keeps the ingress's one Python thread for HTTP and cuts crops at the input
    size of the model this replica runs; the model folder can also be swapped by POST /admin/reload (serve.reload).
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
        super().__init__(ModelRunner(threads), control_poll_s)
        self.limits = limits
        self.pool = ThreadPoolExecutor(max(1, int(decode_threads)), thread_name_prefix="mycolens-decode")
        self.min_batch_size = int(min_batch_size)  # the ingress's group size: a smaller batch could not take one
        self.run_batch.set_max_batch_size(max(int(max_batch_size), self.min_batch_size))
        self.run_batch.set_batch_wait_timeout_s(float(batch_wait_timeout_s))

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Serve's user_config: batch settings (optional), then the model folder and variant (serve.reload)."""
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
        await self.follow_config(user_config)

    async def check_health(self) -> None:
        """Serve's health check: unhealthy until a model is loaded."""
        if self.runner.current is None:
            raise RuntimeError(self.runner.last_error or "no model loaded")

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
        """The loaded model's info and this replica's pid and model generation."""
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
    if importlib.util.find_spec("serve.web") is None:
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
        root = repo_root()
        settings = ServeSettings.from_config(self.config)
        metrics = ServeMetrics()
        hooks = PredictionHooks(
            settings.hook_queue_size, on_error=metrics.hook_errors.inc, on_drop=metrics.hook_dropped.inc
        )
        ctx = IngressContext(
            config=self.config, root=root, metrics_registry=metrics.registry, hooks=hooks, model_info=None
        )  # type: ignore[arg-type]
        web = _web_module()
        routers = [web.router] if web is not None and hasattr(web, "router") else []
        setups = [web.setup] if web is not None and hasattr(web, "setup") else []
        group = self.config["ingress"]["group"]
        backend = ServeBackend(self.model, settings.reload_wait_s, group["max_size"], group["wait_s"])
        static = root / "serve" / "static"
        return build_api(settings, backend, ctx, metrics, static_dir=static, routers=routers, setups=setups)
