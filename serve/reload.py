"""Model reload on the model deployment: the folder of Serve's user_config, or one set by POST /admin/reload.

Replicas agree on the model through a deployment-scoped control actor (mycolens.serving.model.ModelControl): a
folder set on one replica gets a new generation there, and the others pick it up by polling.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from ray import serve

from mycolens.inference.onnx_model import ModelRefused
from mycolens.serving.model import ModelControl, ModelRunner
from mycolens.serving.settings import resolve_path

log = logging.getLogger("ray.serve")


def serve_control_actor() -> Any:
    """ModelControl as a Ray actor class (the model deployment's `control` deployment actor)."""
    import ray

    return ray.remote(ModelControl)


class ModelReload:
    """The model folder a replica serves: loaded from user_config or the control actor; a refused one keeps the old."""

    def __init__(self, runner: ModelRunner, control_poll_s: float) -> None:
        self.runner = runner
        self.control_poll_s = float(control_poll_s)
        self.generation = -1
        self.config: dict[str, str] | None = None
        self._lock = asyncio.Lock()
        self._watch: asyncio.Task | None = None

    async def follow_config(self, user_config: dict[str, Any]) -> None:
        """Load the configured model folder; a refused folder keeps the current model (fails only the first load)."""
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
