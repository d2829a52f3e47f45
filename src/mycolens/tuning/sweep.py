"""Run (or resume) a Ray Tune sweep of training runs and write its results: table, plot, best config and checkpoint.

Layout under <storage_path>/<name>/: tune/ (Ray Tune's experiment: trials, checkpoints, state for Tuner.restore),
results.csv (one row per trial), history.csv (every epoch), results.png, best.ckpt, summary.json; the best config
goes to `experiment_file` (conf/experiment/sweep_<name>.yaml by default).
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from hydra.utils import instantiate

from mycolens.errors import UserError
from mycolens.params import compose_config
from mycolens.training.ray_train import CHECKPOINT_NAME
from mycolens.tuning.results import experiment_yaml, history_rows, plot_trials, trial_rows, write_csv
from mycolens.tuning.space import build_param_space, to_overrides
from mycolens.tuning.trainable import train_trial
from mycolens.utils.io import atomic_path, write_bytes_atomic, write_json_atomic
from mycolens.utils.ray_session import ray_session, unshared

log = logging.getLogger(__name__)


def trial_dirname(trial: Any) -> str:
    """Short trial folder names (Tune's default embeds every parameter value)."""
    return f"trial_{trial.trial_id}"


def make_trainable(
    config_dir: str,
    base_overrides: Sequence[str],
    objective: Mapping[str, float] | None,
    resources: Mapping[str, float],
) -> Any:
    from ray import tune

    fn = partial(
        train_trial, config_dir=str(config_dir), base_overrides=list(base_overrides), objective=dict(objective or {})
    )
    fn.__name__ = "train_trial"  # Tune names the experiment's trainable after it
    return tune.with_resources(fn, {k.lower(): float(v) for k, v in resources.items()})


def make_tuner(sweep: Mapping[str, Any], trainable: Any, tune_dir: Path, seed: int) -> Any:
    """A fresh Tuner from the sweep config: param space, scheduler, search algorithm, trials, checkpoints."""
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    metric, mode = str(sweep["metric"]), str(sweep["mode"])
    limit = int(sweep.get("max_concurrent_trials") or 0)
    if sweep.get("search_alg"):  # a Searcher: Tune wraps it in a ConcurrencyLimiter
        search_alg, max_concurrent = instantiate(sweep["search_alg"]), limit or None
    else:  # Tune ignores max_concurrent_trials for a given BasicVariantGenerator: it limits itself
        search_alg, max_concurrent = BasicVariantGenerator(random_state=seed, max_concurrent=limit), None
    return tune.Tuner(
        trainable,
        param_space=build_param_space(sweep["search_space"]),
        tune_config=tune.TuneConfig(
            metric=metric,
            mode=mode,
            scheduler=instantiate(sweep["scheduler"]) if sweep.get("scheduler") else None,
            search_alg=search_alg,
            num_samples=int(sweep["num_samples"]),
            max_concurrent_trials=max_concurrent,
            trial_dirname_creator=trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=tune_dir.name,
            storage_path=str(tune_dir.parent),
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=int(sweep.get("checkpoints_to_keep") or 1),
                checkpoint_score_attribute=metric,
                checkpoint_score_order=mode,
            ),
            failure_config=tune.FailureConfig(max_failures=int(sweep["max_failures"])),
        ),
    )


def best_checkpoint_file(result: Any, metric: str, mode: str) -> Path | None:
    """The best trial's best Lightning checkpoint: a Tune checkpoint, or the Ray Train one a trainer=ray trial named."""
    ckpt = result.get_best_checkpoint(metric, mode) if result.best_checkpoints else None
    ckpt = ckpt or result.checkpoint
    if ckpt is not None:
        return Path(ckpt.path) / CHECKPOINT_NAME
    hist = result.metrics_dataframe
    if hist is not None and "checkpoint_path" in hist and metric in hist:
        hist = hist.dropna(subset=["checkpoint_path", metric])
        if len(hist):
            row = hist.loc[hist[metric].idxmax() if mode == "max" else hist[metric].idxmin()]
            return Path(str(row["checkpoint_path"])) / CHECKPOINT_NAME
    return None


def run_sweep(
    *,
    config_dir: str,
    base_overrides: Sequence[str],
    sweep: Mapping[str, Any],
    ray_cfg: Mapping[str, Any],
    seed: int,
    ray_train_trials: bool = False,
) -> dict[str, Any]:
    """Fit or resume the sweep `sweep['name']`, then write its results; returns the summary (also summary.json).

    `ray_train_trials` (trainer=ray): a local Ray then starts its dashboard, whose state API lets Ray Train release
    the workers of a trial that the scheduler stops mid-run.
    """
    from ray import tune

    if ray_train_trials:
        ray_cfg = {**ray_cfg, "include_dashboard": True}

    exp_dir = Path(sweep["storage_path"]).resolve() / str(sweep["name"])
    tune_dir = exp_dir / "tune"
    metric, mode = str(sweep["metric"]), str(sweep["mode"])
    if mode not in ("min", "max"):
        raise UserError(f"sweep.mode must be min or max, not {mode!r}")
    trainable = make_trainable(
        config_dir, base_overrides, sweep.get("objective"), sweep.get("resources_per_trial") or {"CPU": 1}
    )
    start = time.perf_counter()
    exp_dir.mkdir(parents=True, exist_ok=True)
    with ray_session(ray_cfg):
        problem = unshared({"sweep.storage_path": exp_dir})  # trials on every node write their checkpoints there
        if problem:
            raise UserError(problem)
        resumed = bool(sweep.get("resume", True)) and tune.Tuner.can_restore(str(tune_dir))
        if resumed:
            log.info("resuming the interrupted sweep in %s", tune_dir)
            tuner = tune.Tuner.restore(str(tune_dir), trainable=trainable, resume_unfinished=True, resume_errored=True)
        else:
            if tune_dir.exists():
                log.info("sweep.resume=false: starting %s again", tune_dir)
                shutil.rmtree(tune_dir)
            tuner = make_tuner(sweep, trainable, tune_dir, seed)
        grid = tuner.fit()
    results = [grid[i] for i in range(len(grid))]
    ok = [r for r in results if r.metrics and metric in r.metrics]
    if not ok:
        errors = [r.error for r in results if r.error is not None]
        raise UserError(f"no trial reported {metric!r}" + (f"; first error: {errors[0]}" if errors else ""))
    best = grid.get_best_result(metric=metric, mode=mode, scope="all", filter_nan_and_inf=True)
    return write_outputs(
        exp_dir=exp_dir,
        results=results,
        best=best,
        sweep=sweep,
        config_dir=config_dir,
        base_overrides=base_overrides,
        resumed=resumed,
        wall_s=time.perf_counter() - start,
    )


def write_outputs(
    *,
    exp_dir: Path,
    results: Sequence[Any],
    best: Any,
    sweep: Mapping[str, Any],
    config_dir: str,
    base_overrides: Sequence[str],
    resumed: bool,
    wall_s: float,
) -> dict[str, Any]:
    """results.csv, history.csv, results.png, best.ckpt, the experiment file and summary.json."""
    metric, mode = str(sweep["metric"]), str(sweep["mode"])
    max_t = int((sweep.get("scheduler") or {}).get("max_t") or 0) or max(
        int((r.metrics or {}).get("training_iteration", 0)) for r in results
    )
    table = trial_rows(results, metric, mode, max_t)
    history = history_rows(results, metric)
    best_id = (best.metrics or {}).get("trial_id")
    write_csv(table, exp_dir / "results.csv")
    write_csv(history, exp_dir / "history.csv")
    plot_trials(history, metric, best_id, exp_dir / "results.png")

    ckpt_file = best_checkpoint_file(best, metric, mode)
    best_ckpt = exp_dir / "best.ckpt"
    if ckpt_file is not None and ckpt_file.is_file():
        with atomic_path(best_ckpt) as tmp:
            shutil.copyfile(ckpt_file, tmp)
    best_overrides = to_overrides(best.config or {})
    composed = compose_config([*base_overrides, *best_overrides], config_dir, return_hydra_config=True)
    defaults = compose_config([], config_dir, return_hydra_config=True).hydra.runtime.choices
    best_value = table.loc[table["trial_id"] == best_id, f"best_{metric}"]
    header = [
        f"Best trial of sweep '{sweep['name']}': {best_id}, {metric}={best_value.iloc[0] if len(best_value) else None} ({mode}).",
        f"Sampled: {' '.join(best_overrides)}",
        f"Sweep overrides: {' '.join(base_overrides) or '(none)'}",
        f"Checkpoint: {best_ckpt}",
        f"Usage: python scripts/train.py experiment={Path(sweep['experiment_file']).stem}",
    ]
    experiment_file = Path(sweep["experiment_file"])
    write_bytes_atomic(experiment_file, experiment_yaml(composed, defaults, header).encode())
    summary = {
        "name": sweep["name"],
        "metric": metric,
        "mode": mode,
        "trials": len(results),
        "stopped_early": int(table["stopped_early"].sum()) if len(table) else 0,
        "errored": int((table["error"] != "").sum()) if len(table) else 0,
        "resumed": resumed,
        "wall_seconds": round(wall_s, 1),
        "best": {
            "trial_id": best_id,
            "value": None if not len(best_value) else best_value.iloc[0],
            "epochs": int((best.metrics or {}).get("training_iteration", 0)),
            "overrides": best_overrides,
            "checkpoint": str(best_ckpt) if best_ckpt.is_file() else None,
            "experiment_file": str(experiment_file),
        },
        "results_csv": str(exp_dir / "results.csv"),
        "plot": str(exp_dir / "results.png"),
        "tune_dir": str(exp_dir / "tune"),
    }
    write_json_atomic(exp_dir / "summary.json", summary)
    return summary
