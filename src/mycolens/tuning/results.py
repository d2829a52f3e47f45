"""What a sweep leaves behind: a per-trial table (CSV), the metric across trials (PNG), the best config as an experiment."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from mycolens.utils.io import atomic_path, write_bytes_atomic

# config groups an experiment file may switch (`override /model: resnet18`); the rest is infrastructure
EXPERIMENT_GROUPS = ("data", "model", "trainer", "callbacks", "logger")
EXPERIMENT_SECTIONS = ("seed", "data", "model", "trainer", "callbacks")


def _finite(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def trial_rows(results: Sequence[Any], metric: str, mode: str, max_t: int) -> pd.DataFrame:
    """One row per trial: id, epochs run, best/last metric, stopped early or not, error, and its sampled params."""
    rows = []
    for r in results:
        hist = r.metrics_dataframe if r.metrics_dataframe is not None else pd.DataFrame()
        values = [v for v in hist.get(metric, []) if _finite(v) is not None]
        best = (max if mode == "max" else min)(values) if values else None
        last = r.metrics or {}
        epochs = int(last.get("training_iteration", len(hist)) or 0)
        rows.append(
            {
                "trial_id": last.get("trial_id", Path(r.path).name),
                "epochs": epochs,
                f"best_{metric}": best,
                f"last_{metric}": _finite(last.get(metric)),
                "stopped_early": r.error is None and epochs < max_t,
                "error": type(r.error).__name__ if r.error is not None else "",
                **{f"param:{k}": v for k, v in sorted((r.config or {}).items())},
            }
        )
    table = pd.DataFrame(rows)
    if len(table):
        table = table.sort_values(f"best_{metric}", ascending=mode == "min", na_position="last", kind="stable")
    return table.reset_index(drop=True)


def history_rows(results: Sequence[Any], metric: str) -> pd.DataFrame:
    """Every reported epoch of every trial: trial_id, training_iteration, the metric (long format, for plots)."""
    frames = []
    for r in results:
        hist = r.metrics_dataframe
        if hist is None or metric not in hist:
            continue
        frame = hist[["training_iteration", metric]].copy()
        frame.insert(0, "trial_id", (r.metrics or {}).get("trial_id", Path(r.path).name))
        frames.append(frame)
    return (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=["trial_id", "training_iteration", metric])
    )


def write_csv(table: pd.DataFrame, path: Path) -> Path:
    write_bytes_atomic(path, table.to_csv(index=False).encode())
    return path


def plot_trials(history: pd.DataFrame, metric: str, best_trial: str | None, path: Path) -> Path:
    """The metric per epoch for every trial (early-stopped trials end early); the best trial drawn bold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for trial_id, group in history.groupby("trial_id", sort=True):
        best = trial_id == best_trial
        ax.plot(
            group["training_iteration"],
            group[metric],
            marker="o",
            markersize=3,
            linewidth=2.5 if best else 1.0,
            alpha=1.0 if best else 0.6,
            label=f"{trial_id} (best)" if best else trial_id,
        )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch (training_iteration)")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} across {history['trial_id'].nunique()} trials")
    ax.grid(alpha=0.3)
    if history["trial_id"].nunique() <= 12:
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def experiment_yaml(best: DictConfig, default_choices: Mapping[str, Any], header: Sequence[str]) -> str:
    """A Hydra experiment file (`# @package _global_`) that recomposes the best trial's config.

    `best` is the trial's composed config with its hydra node (for the group choices); groups that differ from the
    primary config's defaults become `override /group: choice`, and the trained sections are written in full.
    """
    choices = dict(best.hydra.runtime.choices)
    defaults: list[Any] = [
        {f"override /{g}": choices[g]}
        for g in EXPERIMENT_GROUPS
        if choices.get(g) is not None and choices.get(g) != default_choices.get(g)
    ]
    body = {
        k: OmegaConf.to_container(best[k], resolve=False) if isinstance(best[k], DictConfig) else best[k]
        for k in EXPERIMENT_SECTIONS
        if k in best
    }
    doc = OmegaConf.create({"defaults": [*defaults, "_self_"], **body})
    lines = ["# @package _global_", *(f"# {h}" for h in header)]
    return "\n".join(lines) + "\n" + OmegaConf.to_yaml(doc)
