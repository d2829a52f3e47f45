"""The default pipeline under several seeds: mean and worst of every figure the README reports, and each target.

    python benchmarks/seeds.py [--seeds 42 1 2] [--out DIR] [--keep]

Each seed runs data -> train -> compress -> export -> evaluate with the default config (`seed=S`: the data, the
splits and the training order change; the outlier images and the OOD test sets keep their own seeds), every
artifact in its own folder under --out. The OOD test sets are built once. A figure varies from run to run (the
machine's float rounding and the seed), so a target holds only if the worst of the seeds meets it. The last line
is one JSON object: per figure {mean, worst, per_seed}, the targets with pass/fail on the worst, and the seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mycolens.utils.paths import repo_root

ROOT = repo_root(env=False)
STAGES = ("data.py", "train.py", "compress.py", "export.py", "evaluate.py")
# figure -> (where: "served" | "teacher" | "compress", higher is better?)
FIGURES = {
    "accuracy": ("served", True),
    "macro_f1": ("served", True),
    "ece": ("served", False),
    "ece_noise_floor": ("served", False),
    "unsafe_edible_rate": ("served", False),
    "abstain_rate": ("served", False),
    "ood_abstain_rate": ("served", True),
    "ood_abstain_rate_min": ("served", True),
    "ood_edible": ("served", False),
    "aurc": ("served", False),
    "teacher_accuracy": ("teacher", True),
    "student_minus_teacher": ("compress", True),
}
BASELINE_ACCURACY = 0.943  # the served int8 accuracy the README gave before abstention on real inputs (2026-11-25)


def say(msg: str) -> None:
    print(f"[seeds] {msg}", file=sys.stderr, flush=True)


def run_stage(script: str, overrides: list[str], log: Path) -> int:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "DVC_NO_ANALYTICS": "1", "WANDB_MODE": "offline"}
    with log.open("a") as f:
        f.write(f"\n$ python scripts/{script} {' '.join(overrides)}\n")
        f.flush()
        return subprocess.run(
            [sys.executable, str(ROOT / "scripts" / script), *overrides], cwd=ROOT, env=env, stdout=f, stderr=f
        ).returncode


def one_seed(seed: int, base: Path, ood_dir: Path) -> dict:
    """Run the pipeline for one seed; return its figures and the stages' exit codes."""
    out = base / f"seed{seed}"
    out.mkdir(parents=True, exist_ok=True)
    overrides = [
        f"seed={seed}",
        f"paths.root_dir={ROOT}",
        f"paths.data_dir={out}/data",
        f"paths.ood_sets_dir={ood_dir}",
        f"paths.models_dir={out}/models",
        f"paths.reports_dir={out}/reports",
        f"paths.log_dir={out}/logs",
    ]
    codes = {}
    for script in STAGES:
        start = time.perf_counter()
        codes[script] = run_stage(script, overrides, out / "pipeline.log")
        say(f"seed {seed}: {script} exit {codes[script]} in {time.perf_counter() - start:.0f} s")
        if codes[script] not in (0, 2):  # 2: a gate failed but its reports were written
            raise SystemExit(f"seed {seed}: {script} failed (exit {codes[script]}); see {out / 'pipeline.log'}")
    metrics = json.loads((out / "reports" / "metrics.json").read_text())
    compress = json.loads((out / "reports" / "compress.json").read_text())
    served = metrics["variants"][metrics["served"]]
    teacher = metrics["variants"]["teacher"]
    figures = {k: served.get(k) for k, (where, _) in FIGURES.items() if where == "served"}
    figures["teacher_accuracy"] = teacher["accuracy"]
    figures["student_minus_teacher"] = metrics["variants"]["compressed"]["accuracy"] - teacher["accuracy"]
    per_set = {name: s["abstain_rate"] for name, s in served["ood_sets"].items()}
    return {
        "figures": figures,
        "ood_sets": per_set,
        "gate_passed": metrics["safety_gate"]["passed"],
        "exit_codes": codes,
        "compress_report": {k: compress.get(k) for k in ("teacher_accuracy", "student_accuracy", "flops_ratio")},
    }


def summarise(runs: dict[int, dict]) -> dict:
    out = {}
    for name, (_, higher) in FIGURES.items():
        values = [r["figures"][name] for r in runs.values() if r["figures"].get(name) is not None]
        if values:
            worst = min(values) if higher else max(values)
            out[name] = {"mean": round(sum(values) / len(values), 4), "worst": round(worst, 4),
                         "per_seed": {s: round(r["figures"][name], 4) for s, r in runs.items()}}  # fmt: skip
    sets = sorted({n for r in runs.values() for n in r["ood_sets"]})
    out["ood_sets_abstain_worst"] = {n: round(min(r["ood_sets"][n] for r in runs.values()), 4) for n in sets}
    return out


def targets(s: dict, runs: dict[int, dict]) -> dict[str, bool]:
    """Issue targets, each judged on the worst seed."""
    return {
        "no_ood_input_called_edible": s["ood_edible"]["worst"] == 0,
        "unsafe_edible_rate_below_1pct": s["unsafe_edible_rate"]["worst"] < 0.01,
        "every_ood_set_abstains_95pct": min(s["ood_sets_abstain_worst"].values()) >= 0.95,
        "accuracy_within_1pt_of_baseline": s["accuracy"]["worst"] >= BASELINE_ACCURACY - 0.01,
        "abstain_rate_at_most_25pct": s["abstain_rate"]["worst"] <= 0.25,
        "ece_below_0.03": s["ece"]["worst"] < 0.03,
        "student_within_1pt_of_teacher": s["student_minus_teacher"]["worst"] >= -0.01,
        "safety_gate_passed": all(r["gate_passed"] for r in runs.values()),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2])
    p.add_argument("--out", type=Path, default=None, help="work folder (default: a temp folder, removed after)")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    args = p.parse_args()
    base = args.out or Path(tempfile.mkdtemp(prefix="mycolens-seeds-"))
    base.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        ood_dir = base / "ood_sets"
        code = run_stage("ood_sets.py", [f"paths.ood_sets_dir={ood_dir}"], base / "ood_sets.log")
        if code:
            raise SystemExit(f"scripts/ood_sets.py failed (exit {code}); see {base / 'ood_sets.log'}")
        runs = {}
        for seed in args.seeds:
            say(f"seed {seed}: the default pipeline into {base / f'seed{seed}'}")
            runs[seed] = one_seed(seed, base, ood_dir)
        summary = summarise(runs)
        result = {
            "benchmark": "seeds",
            "seeds": args.seeds,
            "figures": summary,
            "targets_on_worst": targets(summary, runs),
            "baseline_accuracy": BASELINE_ACCURACY,
            "runs": runs,
            "seconds": round(time.perf_counter() - start, 1),
        }
        for name, f in summary.items():
            if "worst" in f:
                say(f"{name}: mean {f['mean']}, worst {f['worst']} {f['per_seed']}")
        print(json.dumps(result, sort_keys=True))
    finally:
        if not args.keep and args.out is None:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
