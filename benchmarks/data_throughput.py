"""What streaming the shards costs and saves: input pipeline speed, training speed, memory under a limit.

    python benchmarks/data_throughput.py [--images 8000] [--photos 1500] [--steps 40] [--limit-gb 1.6] [--workers 2]

1. Input pipeline: images/s of the streamed training loader (decode + augment in --workers DataLoader workers,
   collated into uint8 batches, as a Trainer receives them) over --images 64-px images, next to the decode-only
   limit of the same JPEGs (decode, resize, crop in a process pool over all cores); `pipeline_over_decode_limit`
   (goal >= 0.8). The same pool decoding and augmenting (`decode_augment_images_per_s`) shows what augmentation
   itself costs. `photo_224`: the same two rates at `data.image_size=224` over --photos photo-sized JPEGs
   (--photo-side px square, rendered at that size, quality 90; ingest keeps a photo's longer side <= 512), where
   decoding is most of the work, as it is for real photos.
2. Training: steps/s of the default model at 64 px, today's in-memory path vs streaming (0 and --workers
   workers); each measured twice, alternating, the faster kept (the machine is shared); `streaming_over_in_memory`
   (goal >= 0.9).
3. Memory: one epoch at 224 px, streamed, in a process whose private writable memory is capped with
   `prlimit --data` at --limit-gb, on a data set whose decoded size is 3x that limit; the run must finish. The
   in-memory path under the same cap is run too (it is expected to fail). `prlimit --as` is not used: importing
   torch alone maps ~4.5 GB of address space that is never touched. This run uses a 1-channel network and one
   torch thread (each thread's stack counts against the cap), so its time goes to reading and decoding.

Data: a small synthetic set (64-px JPEGs) whose train rows are repeated to the sizes needed (tests/grow.py); at
224 px these JPEGs are upscaled, so decoding is cheaper than for real 224-px photos. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from functools import partial
from multiprocessing import Pool
from pathlib import Path

from mycolens.utils.paths import repo_root

ROOT = repo_root(env=False)
sys.path.insert(0, str(ROOT))  # tests.grow and tests.rss_child

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
DECODED_224 = 3 * 224 * 224  # bytes of one decoded 224-px image


def compose(tmp: Path, shards: Path, *extra: str):
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    from mycolens.params import compose_config

    GlobalHydra.instance().clear()
    ovr = [
        f"paths.root_dir={ROOT}",
        f"paths.shards_dir={shards}",
        f"paths.models_dir={tmp}/models",
        f"paths.reports_dir={tmp}/reports",
        f"paths.log_dir={tmp}/logs",
        "data.outliers.images=0",
        *extra,
    ]
    cfg = compose_config(ovr, ROOT / "conf")
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp / "run")
    return cfg


def _decode(blob: bytes, size: int) -> int:
    from mycolens.inference.preprocess import decode_image, resize_center_crop

    return resize_center_crop(decode_image(blob), size).size


_AUGMENT = None


def _decode_augment(blob: bytes) -> int:
    global _AUGMENT
    import torch

    from mycolens.data.augment import PhotoCropFlip
    from mycolens.inference.preprocess import decode_image

    if _AUGMENT is None:
        torch.set_num_threads(1)  # as in a DataLoader worker
        _AUGMENT = PhotoCropFlip(64, {"hflip": True, "scale": [0.8, 1.0]})
    # what a streaming worker does per row: decode, then crop + resize + flip from the photo to uint8
    return _AUGMENT(decode_image(blob)).numel()


def pool_rate(shards: Path, cores: int, fn) -> float:
    """Images/s of `fn` over the train JPEGs in a process pool of `cores` (no DataLoader, nothing sent back)."""
    from mycolens.data.shards import read_split

    blobs = read_split(shards, "train", ["image"]).column("image").to_pylist()
    with Pool(cores) as pool:
        pool.map(fn, blobs[:200])  # warm the workers
        start = time.perf_counter()
        pool.map(fn, blobs, chunksize=64)
        return len(blobs) / (time.perf_counter() - start)


def pipeline_rate(tmp: Path, shards: Path, workers: int, size: int) -> float:
    """Images/s of the streamed training loader (decode + augment + collate) with `workers` workers."""
    from mycolens.training.run import build_datamodule

    dm = build_datamodule(
        compose(tmp, shards, "data.cache_max_gb=0", f"data.loader.num_workers={workers}", f"data.image_size={size}")
    )
    dm.setup("fit")
    loader = dm.train_dataloader()
    start, n = time.perf_counter(), 0
    for x, _ in loader:
        n += len(x)
    return n / (time.perf_counter() - start)


def pipeline_vs_limit(tmp: Path, shards: Path, cores: int, workers: int, size: int) -> dict:
    """The streamed loader's images/s at `size` next to the decode-only limit of the same JPEGs, and their ratio."""
    decode = pool_rate(shards, cores, partial(_decode, size=size))
    pipeline = pipeline_rate(tmp, shards, workers, size)
    return {
        "decode_only_images_per_s": round(decode, 1),
        "pipeline_images_per_s": round(pipeline, 1),
        "pipeline_over_decode_limit": round(pipeline / decode, 3),
    }


def steps_per_second(tmp: Path, shards: Path, steps: int, *extra: str) -> float:
    """Training steps/s of the default model, steps 5..`steps` of one epoch (setup and warm-up excluded)."""
    from lightning.pytorch import Callback, seed_everything

    from mycolens.training.run import build_datamodule, build_module, build_trainer

    class StepTimer(Callback):
        def __init__(self) -> None:
            self.times: list[float] = []

        def on_train_batch_end(self, *args) -> None:
            self.times.append(time.perf_counter())

    cfg = compose(tmp, shards, *extra)
    seed_everything(int(cfg.seed), workers=True)
    dm = build_datamodule(cfg)
    timer = StepTimer()
    trainer = build_trainer(
        cfg,
        [timer],
        [],
        max_epochs=1,
        limit_train_batches=steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        enable_checkpointing=False,
        enable_progress_bar=False,
    )
    trainer.fit(build_module(cfg, dm), datamodule=dm)
    t = timer.times[4:]
    return (len(t) - 1) / (t[-1] - t[0])


def capped_run(tmp: Path, shards: Path, limit_bytes: int, cache_max_gb: float) -> dict:
    """One 224-px epoch in a child process under `prlimit --data`; its exit code, seconds and peak RSS."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
        "MYCOLENS_ROOT": str(ROOT),
    }
    cmd = [
        "prlimit",
        f"--data={limit_bytes}",
        sys.executable,
        str(ROOT / "tests" / "rss_child.py"),
        str(shards),
        str(tmp),
        "data.image_size=224",
        f"data.cache_max_gb={cache_max_gb}",
        "model.backbone_kwargs.channels=[1]",
        "data.loader.batch_size=32",
    ]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    out = {"exit_code": proc.returncode, "seconds": round(time.perf_counter() - start, 1)}
    if proc.returncode == 0:
        out["peak_rss_mb"] = round(json.loads(proc.stdout.strip().splitlines()[-1])["peak_rss_mb"], 1)
    else:
        errors = [line for line in proc.stderr.splitlines() if "Error" in line or "error" in line]
        out["error"] = (errors[-1] if errors else proc.stderr.strip().splitlines()[-1])[:200]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=8000, help="train images for the pipeline and training runs")
    ap.add_argument("--specimens", type=int, default=12, help="specimens per class of the drawn seed set")
    ap.add_argument("--photos", type=int, default=1500, help="train images of the 224-px pipeline run")
    ap.add_argument("--photo-side", type=int, default=384, help="side of the photo-sized JPEGs of that run")
    ap.add_argument("--steps", type=int, default=40, help="training steps timed per run")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="DataLoader workers when streaming")
    ap.add_argument("--limit-gb", type=float, default=1.6, help="prlimit --data of the 224-px run")
    ap.add_argument("--skip-capped", action="store_true", help="leave out the 224-px run under the cap")
    ap.add_argument("--skip-speed", action="store_true", help="only the 224-px run under the cap")
    args = ap.parse_args()

    from tests.grow import grown_shards

    cores = os.cpu_count() or 2
    result: dict = {"cores": cores, "workers": args.workers, "images": args.images}
    with tempfile.TemporaryDirectory(prefix="data_throughput_") as d:
        tmp = Path(d)
        from benchmarks.ray_overhead import make_shards  # the same synthetic set

        seed_set = make_shards(tmp / "seed", 64, args.specimens, photos=2, seed=5)
        shards = grown_shards(seed_set, tmp / "shards", args.images)

        if not args.skip_speed:
            result["decode_augment_images_per_s"] = round(pool_rate(shards, cores, _decode_augment), 1)
            result.update(pipeline_vs_limit(tmp / "p", shards, cores, args.workers, 64))
            photo_seed = make_shards(tmp / "photo_seed", args.photo_side, 2, photos=2, seed=5)
            photos = grown_shards(photo_seed, tmp / "photos", args.photos)
            result["photo_224"] = {
                "photo_side": args.photo_side,
                "images": args.photos,
                **pipeline_vs_limit(tmp / "p224", photos, cores, args.workers, 224),
            }

            runs: dict[str, list[float]] = {"in_memory": [], "streaming_w0": [], f"streaming_w{args.workers}": []}
            for _ in range(2):
                runs["in_memory"].append(steps_per_second(tmp / "m", shards, args.steps))
                runs["streaming_w0"].append(steps_per_second(tmp / "s0", shards, args.steps, "data.cache_max_gb=0"))
                runs[f"streaming_w{args.workers}"].append(
                    steps_per_second(
                        tmp / "sw", shards, args.steps, "data.cache_max_gb=0", f"data.loader.num_workers={args.workers}"
                    )
                )
            best = {k: max(v) for k, v in runs.items()}
            result.update({f"steps_per_s_{k}": round(v, 3) for k, v in best.items()})
            stream_best = max(v for k, v in best.items() if k.startswith("streaming"))
            result["streaming_over_in_memory"] = round(stream_best / best["in_memory"], 3)

        if not args.skip_capped:
            limit = int(args.limit_gb * 1e9)
            big_n = -(-3 * limit // DECODED_224)
            big = grown_shards(seed_set, tmp / "big", big_n)
            result["capped"] = {
                "limit_gb": args.limit_gb,
                "images": big_n,
                "decoded_gb": round(big_n * DECODED_224 / 1e9, 2),
                "streaming": capped_run(tmp / "c1", big, limit, 0),
                "in_memory": capped_run(tmp / "c2", big, limit, 1000),
            }
    sys.stdout.flush()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
