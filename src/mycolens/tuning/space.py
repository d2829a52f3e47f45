"""Search spaces from config and sampled values back as Hydra overrides.

A leaf of `sweep.search_space` is a sampler call as text, `loguniform(3e-4, 1e-2)`, `choice(["small_cnn", "resnet18"])`,
`grid_search([1e-3, 3e-3])` (any ray.tune sampler, literal arguments), a `{_target_: ray.tune.loguniform, lower: ...,
upper: ...}` mapping, or a constant. The nesting of keys is the override key: model.optimizer.lr.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping
from typing import Any

from hydra.utils import instantiate

from mycolens.errors import UserError

_PLAIN = re.compile(r"[A-Za-z0-9_./:+-]+")
_CALL = re.compile(r"\s*([a-z_]+)\s*\((.*)\)\s*", re.DOTALL)
SAMPLERS = (
    "uniform", "quniform", "loguniform", "qloguniform", "randn", "qrandn", "randint", "qrandint",
    "lograndint", "qlograndint", "choice", "grid_search",
)  # fmt: skip


def parse_sampler(text: str) -> Any:
    """`loguniform(1e-4, 1e-2)` -> ray.tune.loguniform(1e-4, 1e-2); other text is returned unchanged (a constant)."""
    m = _CALL.fullmatch(text)
    if not m or m.group(1) not in SAMPLERS:
        return text
    from ray import tune

    try:
        args = ast.literal_eval(f"({m.group(2)},)") if m.group(2).strip() else ()
    except (ValueError, SyntaxError) as exc:
        raise UserError(f"cannot read the arguments of {text!r}: use Python literals, e.g. choice([0.1, 0.2])") from exc
    return getattr(tune, m.group(1))(*args)


def flatten_space(space: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{dotted override key: leaf spec}: a leaf is a mapping with `_target_` (a sampler) or any non-mapping value."""
    flat: dict[str, Any] = {}
    for key, value in (space or {}).items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and "_target_" not in value:
            flat.update(flatten_space(value, f"{path}."))
        else:
            flat[path] = value
    return flat


def build_param_space(space: Mapping[str, Any]) -> dict[str, Any]:
    """Tune's param_space: {override key: ray.tune sampler or constant}, samplers built with hydra's instantiate."""
    out: dict[str, Any] = {}
    for key, spec in flatten_space(space).items():
        try:
            if isinstance(spec, Mapping):
                out[key] = instantiate(spec, _convert_="all")
            else:
                out[key] = parse_sampler(spec) if isinstance(spec, str) else spec
        except UserError as exc:
            raise UserError(f"sweep.search_space.{key}: {exc}") from exc
        except Exception as exc:  # a typo in a sampler name or its arguments
            raise UserError(f"sweep.search_space.{key}: cannot build {spec}: {exc}") from exc
    if not out:
        raise UserError("sweep.search_space is empty: add e.g. model: {optimizer: {lr: loguniform(3e-4, 1e-2)}}")
    return out


def override_value(value: Any) -> str:
    """A Python value in Hydra's override grammar."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(override_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{override_value(v)}" for k, v in value.items()) + "}"
    text = str(value)
    if _PLAIN.fullmatch(text) and text.lower() not in ("null", "true", "false"):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def to_overrides(params: Mapping[str, Any]) -> list[str]:
    """Sampled {key: value} as Hydra overrides (`model=resnet18`, `model.optimizer.lr=0.002`), in a stable order."""
    return [f"{key}={override_value(value)}" for key, value in sorted(params.items())]


def is_sweep_override(override: str) -> bool:
    """True for overrides of the sweep itself (`sweep=optuna`, `sweep.num_samples=4`), which trials must not see."""
    key = override.lstrip("+~").split("=", 1)[0]
    return key == "sweep" or key.startswith("sweep.")


def objective_value(metrics: Mapping[str, float], weights: Mapping[str, float]) -> float:
    """sum(weight x metric): e.g. {val/accuracy: 1, val/unsafe_edible_rate: -2} rewards accuracy, punishes unsafe calls."""
    missing = [k for k in weights if k not in metrics]
    if missing:
        raise UserError(f"sweep.objective names metrics that were not logged: {missing} (logged: {sorted(metrics)})")
    return float(sum(float(w) * float(metrics[k]) for k, w in weights.items()))
