"""How often the promotion gate refuses a clean candidate: the default pipeline's models of several seeds, each
compared with each other on each seed's frozen evaluation set with the limits of conf/export's safety_gate.

    python benchmarks/gate_noise.py --runs DIR    # DIR from `python benchmarks/seeds.py --keep --out DIR`
    python benchmarks/gate_noise.py               # runs benchmarks/seeds.py --keep first (about 45 min a seed)

No model here was trained on poisoned data, so every refusal is run-to-run noise: a model of another seed stands
for a clean retrain (the same generator, other specimens). The last line is one JSON object: pairs compared,
refusals, each reason's count, the largest recall drop and the photos per species behind one recall step.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from mycolens.inference.onnx_model import OnnxClassifier
from mycolens.monitoring.promotion import GateLimits, compare_models, freeze_eval_set, model_scores
from mycolens.params import compose_config
from mycolens.utils.paths import repo_root

ROOT = repo_root(env=False)


def reason_kind(reason: str) -> str:
    if reason.startswith("OOD abstention"):
        return "ood_abstention"
    return "dangerous_called_edible" if "(poisonous/deadly)" in reason else "recall_drop"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--runs", type=Path, help="benchmarks/seeds.py --keep output: seed*/data/shards, seed*/models/export"
    )
    p.add_argument("--variant", default=None, help="model file compared (default: serve.variant)")
    args = p.parse_args()
    start = time.perf_counter()
    cfg = compose_config()
    limits = GateLimits.from_config(cfg.export.safety_gate)
    variant = args.variant or str(cfg.serve.variant)
    runs = args.runs
    if runs is None:
        runs = Path(tempfile.mkdtemp(prefix="mycolens-gate-noise-"))
        cmd = [sys.executable, str(ROOT / "benchmarks" / "seeds.py"), "--keep", "--out", str(runs)]
        subprocess.run(cmd, cwd=ROOT, check=True)
    seeds = sorted(d for d in runs.glob("seed*") if (d / "models" / "export" / "model.json").is_file())
    if len(seeds) < 2:
        raise SystemExit(f"need at least two seed*/models/export folders under {runs} (benchmarks/seeds.py --keep)")
    models = {d.name: OnnxClassifier.load(d / "models" / "export", variant) for d in seeds}
    pairs, refused, kinds, worst_drop, photos = 0, 0, Counter(), 0.0, set()
    with tempfile.TemporaryDirectory() as tmp:
        for frozen_of in seeds:
            frozen = freeze_eval_set(frozen_of / "data" / "shards", Path(tmp) / frozen_of.name)
            decoded: dict = {}
            scores = {name: model_scores(m, frozen["path"], decoded=decoded) for name, m in models.items()}
            photos |= {v["photos"] for v in scores[frozen_of.name]["species"].values()}
            for current in scores:
                for candidate in scores:
                    if candidate == current:
                        continue
                    report = compare_models(scores[current], scores[candidate], limits)
                    pairs += 1
                    refused += not report["passed"]
                    kinds.update({reason_kind(r) for r in report["reasons"]})
                    worst_drop = max([worst_drop, *(v["recall_drop"] for v in report["species"].values())])
                    print(
                        f"[gate-noise] frozen {frozen_of.name}: {current} -> {candidate}: "
                        f"{'passed' if report['passed'] else 'REFUSED: ' + '; '.join(report['reasons'])}",
                        file=sys.stderr,
                    )
    result = {
        "pairs": pairs,
        "refused": refused,
        "refused_rate": round(refused / pairs, 4),
        "reasons": dict(kinds),
        "max_recall_drop_seen": round(worst_drop, 4),
        "photos_per_species": sorted(photos),
        "limits": limits.__dict__,
        "variant": variant,
        "seconds": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
