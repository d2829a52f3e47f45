"""Leave-one-family-out: abstention on each procedural outlier family when training never exposed it.

    python benchmarks/ood_families.py [--shards data/shards] [--out DIR] [--keep]

For each family of mycolens.data.outliers, a model is trained with outlier exposure on every family of
`data.outliers.families` except that one (so the family is unseen), exported with the default abstention rule and
evaluated on 200 fresh images of the family. Runs with the same exposure are shared: with the default exposure
([synthetic]) that is two trainings, one with [synthetic] (fractals, periodic and text held out) and one with none
(synthetic held out). The last line is one JSON object: per family, its abstention and edible count when held out,
and the worst abstention over the families.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from mycolens.utils.paths import repo_root

ROOT = repo_root(env=False)
sys.path.insert(0, str(Path(__file__).parent))
from seeds import run_stage  # noqa: E402  (runs scripts/X.py with a log, as the seeds benchmark does)


def say(msg: str) -> None:
    print(f"[ood_families] {msg}", file=sys.stderr, flush=True)


def default_families() -> list[str]:
    import yaml

    return list(yaml.safe_load((ROOT / "conf/data/synthetic.yaml").read_text())["outliers"]["families"])


def main() -> None:
    from mycolens.data.outliers import FAMILIES

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shards", type=Path, default=ROOT / "data/shards", help="shards to train on (scripts/data.py)")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--keep", action="store_true")
    args = p.parse_args()
    if not (args.shards / "manifest.json").is_file():
        raise SystemExit(f"no shards in {args.shards}: run `python scripts/data.py` (or make demo) first")
    base = args.out or Path(tempfile.mkdtemp(prefix="mycolens-lofo-"))
    base.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    exposed = default_families()
    # exposure -> the families it leaves out
    runs: dict[tuple[str, ...], list[str]] = {}
    for family in FAMILIES:
        runs.setdefault(tuple(f for f in exposed if f != family), []).append(family)
    results: dict[str, dict] = {}
    try:
        for k, (exposure, held_out) in enumerate(runs.items()):
            out = base / f"run{k}"
            ood_dir = out / "ood_sets"
            fams = "[" + ",".join(exposure) + "]"
            common = [
                f"paths.root_dir={ROOT}",
                f"paths.shards_dir={args.shards}",
                f"paths.ood_sets_dir={ood_dir}",
                f"paths.models_dir={out}/models",
                f"paths.reports_dir={out}/reports",
                f"paths.log_dir={out}/logs",
                f"data.outliers.families={fams}",
                *([] if exposure else ["data.outliers.images=0"]),
                # the synthetic family's test set is the shards' own ood split
                "evaluate.ood_sets.held_out_families=[" + ",".join(f for f in held_out if f != "synthetic") + "]",
            ]
            log = out / "run.log"
            out.mkdir(parents=True, exist_ok=True)
            say(f"exposure {list(exposure)}: families held out {held_out}")
            steps = [
                ("ood_sets.py", []),
                ("train.py", ["test=false"]),
                ("export.py", [f"ckpt_path={out}/models/best.ckpt", "export.safety_gate.min_ood_abstain=0"]),
                ("evaluate.py", ["evaluate.variants=[onnx_int8]", "evaluate.latency.repeats=1"]),
            ]
            for script, extra in steps:
                code = run_stage(script, common + extra, log)
                if code not in (0, 2):
                    raise SystemExit(f"{script} failed (exit {code}); see {log}")
            metrics = json.loads((out / "reports/metrics.json").read_text())
            per_set = metrics["variants"]["onnx_int8"]["ood_sets"]
            for family in held_out:
                name = "synthetic" if family == "synthetic" else f"family_{family}"
                s = per_set[name]
                results[family] = {"exposure": list(exposure), "set": name, "images": s["images"],
                                   "abstain_rate": s["abstain_rate"], "edible": s["edible"], "reasons": s["reasons"]}  # fmt: skip
                say(f"{family} held out: abstained {s['abstain_rate']:.4f} of {s['images']}, edible {s['edible']}")
        print(json.dumps({
            "benchmark": "ood_families",
            "held_out": results,
            "worst_abstain_rate": min(r["abstain_rate"] for r in results.values()),
            "edible_total": sum(r["edible"] for r in results.values()),
            "seconds": round(time.perf_counter() - start, 1),
        }, sort_keys=True))  # fmt: skip
    finally:
        if not args.keep and args.out is None:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
