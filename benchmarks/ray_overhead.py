"""What Ray costs: one epoch under plain Lightning vs under Ray Train (1 worker, same cores, same data), and sweep speed.

    python benchmarks/ray_overhead.py [--shards data/shards] [--epochs 4] [--sweep-trials 4]

Without --shards it draws a small synthetic set into a temp folder. Both runs use --threads torch threads (1 by
default: on a small shared machine one thread per process is fastest). Epoch time = start of one training epoch to the
start of the next (validation, checkpointing and reporting included); the fastest epoch after the first of each
run counts, and plain Lightning runs before and after Ray Train, so load from other processes hurts neither side.
The last line is one JSON object: `ray_train_over_plain` = plain epoch seconds / Ray Train epoch seconds, i.e.
Ray Train's throughput as a share of plain Lightning's (1.0 = no overhead; target >= 0.8), and
`sweep_trials_per_minute` for an ASHA sweep of --sweep-trials trials on the same data.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from mycolens.utils.paths import repo_root

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
ROOT = repo_root(env=False)
CONF = ROOT / "conf"


def make_shards(out: Path, image_size: int, specimens: int, photos: int, seed: int) -> Path:
    from mycolens.catalogue import load_catalogue
    from mycolens.data.generate import generate_dataset

    generate_dataset(
        out,
        load_catalogue(),
        image_size=image_size,
        specimens_per_class=specimens,
        photos_per_specimen=photos,
        difficulty=1.0,
        ood_images=8,
        splits={"train": 0.7, "val": 0.15, "test": 0.15},
        seed=seed,
        workers=1,
        jpeg_quality=90,
        rows_per_file=2000,
    )
    return out


def overrides(tmp: Path, shards: Path, image_size: int, epochs: int, timer: Path | None) -> list[str]:
    out = [
        f"paths.root_dir={ROOT}",
        f"paths.shards_dir={shards}",
        f"paths.models_dir={tmp}/models",
        f"paths.reports_dir={tmp}/reports",
        f"paths.log_dir={tmp}/logs",
        f"data.image_size={image_size}",
        f"trainer.max_epochs={epochs}",
        "callbacks.early_stopping=null",
        "test=false",
    ]
    if timer is not None:
        out.append(f"+callbacks.epoch_timer={{_target_:mycolens.training.ray_train.EpochTimer,path:'{timer}'}}")
    return out


def compose(config_name: str, ovr: list[str], output_dir: Path):
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    from mycolens.params import compose_config

    GlobalHydra.instance().clear()  # this repository's conf/, whatever composed before
    cfg = compose_config(ovr, CONF, config_name=config_name)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg


def steady_epoch_seconds(paths: list[Path]) -> float:
    """The least-disturbed epoch after the first of each run (robust to other load on a shared machine)."""
    seconds = []
    for path in paths:
        run = json.loads(path.read_text())["epoch_seconds"]
        seconds += run[1:] if len(run) > 1 else run
    return min(seconds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", type=Path, default=None, help="existing shards (default: draw a small set)")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--specimens", type=int, default=16, help="specimens per class when drawing data")
    ap.add_argument("--photos", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--sweep-trials", type=int, default=4)
    ap.add_argument("--sweep-epochs", type=int, default=2)
    ap.add_argument(
        "--cpus", type=int, default=os.cpu_count() or 2, help="CPUs of the local Ray (sweep trials use 1 each)"
    )
    ap.add_argument(
        "--threads", type=int, default=1, help="torch threads of the plain run = CPUs of the Ray Train worker"
    )
    args = ap.parse_args()

    import ray
    import torch
    from omegaconf import OmegaConf

    from mycolens.data.shards import read_split
    from mycolens.training.ray_train import train_on_ray
    from mycolens.training.run import train
    from mycolens.tuning.space import is_sweep_override
    from mycolens.tuning.sweep import run_sweep

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="ray_overhead_") as d:
        tmp = Path(d)
        shards = args.shards or make_shards(tmp / "shards", args.image_size, args.specimens, args.photos, seed=3)
        n_train = read_split(shards, "train", columns=["label"]).num_rows

        plain_timers, ray_timer = [tmp / "plain0.json", tmp / "plain1.json"], tmp / "ray.json"

        def plain(timer: Path) -> None:
            train(
                compose("config", overrides(tmp, shards, args.image_size, args.epochs, timer), tmp / timer.stem),
                publish=False,
            )

        plain(plain_timers[0])

        ray.init(
            address="local",
            num_cpus=args.cpus,
            object_store_memory=200 * 2**20,
            include_dashboard=False,
            log_to_driver=False,
        )
        try:
            ray_ovr = [
                *overrides(tmp, shards, args.image_size, args.epochs, ray_timer),
                "trainer=ray",
                "trainer.num_workers=1",
                f"trainer.resources_per_worker.CPU={args.threads}",  # Ray sets OMP_NUM_THREADS to it
            ]
            train_on_ray(compose("config", ray_ovr, tmp / "ray"), publish=False)
            ray_s = steady_epoch_seconds([ray_timer])
            plain(plain_timers[1])
            plain_s = steady_epoch_seconds(plain_timers)

            sweep_ovr = [
                *overrides(tmp, shards, args.image_size, args.sweep_epochs, None),
                "sweep=asha",
                f"sweep.num_samples={args.sweep_trials}",
                f"sweep.storage_path={tmp}/sweeps",
                f"sweep.experiment_file={tmp}/sweep_best.yaml",
                f"sweep.max_concurrent_trials={args.cpus}",
            ]
            scfg = compose("sweep", sweep_ovr, tmp / "sweep")
            start = time.perf_counter()
            summary = run_sweep(
                config_dir=str(CONF),
                base_overrides=[o for o in sweep_ovr if not is_sweep_override(o)],
                sweep=OmegaConf.to_container(scfg.sweep, resolve=True),
                ray_cfg={},
                seed=int(scfg.seed),
            )
            sweep_min = (time.perf_counter() - start) / 60
        finally:
            ray.shutdown()

    result = {
        "plain_epoch_s": round(plain_s, 3),
        "ray_train_epoch_s": round(ray_s, 3),
        "ray_train_over_plain": round(plain_s / ray_s, 3),
        "train_images_per_epoch": n_train,
        "image_size": args.image_size,
        "epochs": args.epochs,
        "cpus": args.cpus,
        "threads": args.threads,
        "sweep_trials": summary["trials"],
        "sweep_stopped_early": summary["stopped_early"],
        "sweep_epochs_max": args.sweep_epochs,
        "sweep_trials_per_minute": round(summary["trials"] / sweep_min, 3),
        "device": "cpu",
    }
    sys.stdout.flush()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
