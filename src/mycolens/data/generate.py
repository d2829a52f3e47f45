"""The synthetic data set: specimens drawn from catalogue traits, photographed several times, written as shards.

Every specimen gets its own RNG from (seed, species index, specimen index) and every OOD image its own from
(seed, index) (mycolens.data.ood_rows), so the same arguments give byte-identical shards whatever the number of
worker processes.
"""

from __future__ import annotations

import io
import multiprocessing as mp
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from mycolens.catalogue import Catalogue
from mycolens.data import synth
from mycolens.data.ood_rows import check_size, ood_rows, synthetic_row
from mycolens.data.shards import channel_mean_std, grouped_split, write_shards

SPECIMEN_STREAM = 0  # SeedSequence domain tag: specimens never share a stream with OOD images (ood_rows.OOD_STREAM)
OOD_PER_TASK = 25
TRAIN_SPLITS = ("train", "val", "test")


def _specimen_rows(task: tuple) -> list[dict[str, Any]]:
    """Worker: draw one specimen and photograph it; the RNG depends only on (seed, species, specimen)."""
    seed, label, species_id, k, traits, photos, size, difficulty, quality = task
    rng = np.random.default_rng(np.random.SeedSequence([seed, SPECIMEN_STREAM, label, k]))
    specimen = synth.make_specimen(traits, rng)
    name = f"{species_id}-{k:04d}"
    return [synthetic_row(synth.render_photo(specimen, rng, size, difficulty), label, species_id, name, quality)
            for _ in range(photos)]  # fmt: skip


def _run(fn, tasks: list[tuple], workers: int, desc: str, unit: str) -> list[list[dict[str, Any]]]:
    """Map `fn` over tasks in order, in `workers` processes, with a progress bar on stderr."""
    bar = dict(total=len(tasks), desc=desc, unit=unit, file=sys.stderr, leave=False)
    if workers <= 1 or len(tasks) <= 1:
        return [fn(t) for t in tqdm(tasks, **bar)]
    ctx = mp.get_context("spawn")  # safe under threads (torch, Ray) in the parent
    with ctx.Pool(min(workers, len(tasks))) as pool:
        return list(tqdm(pool.imap(fn, tasks, chunksize=2), **bar))


def generate_dataset(
    out_dir: str | Path,
    catalogue: Catalogue,
    *,
    image_size: int,
    specimens_per_class: int,
    photos_per_specimen: int,
    difficulty: float,
    ood_images: int,
    splits: dict[str, float],
    seed: int,
    workers: int,
    jpeg_quality: int,
    rows_per_file: int,
) -> Path:
    """Draw, split by specimen and write the synthetic shards into `out_dir`; returns the manifest path.

    With workers > 1 the pool spawns fresh interpreters: call this under `if __name__ == "__main__":` in scripts.
    """
    check_size(image_size)
    if specimens_per_class < 1 or photos_per_specimen < 1:
        raise ValueError("specimens_per_class and photos_per_specimen must be at least 1")
    if not 0.0 <= float(difficulty) <= 1.0:
        raise ValueError(f"difficulty={difficulty} must be in [0, 1]")
    if not 1 <= int(jpeg_quality) <= 100:
        raise ValueError(f"jpeg_quality={jpeg_quality} must be in 1..100")
    fractions = {str(k): float(v) for k, v in dict(splits).items() if float(v) > 0}
    if "train" not in fractions or set(fractions) - set(TRAIN_SPLITS):
        raise ValueError(f"splits={splits}: use fractions for train (required), val and test")
    traits = [synth.check_appearance(s.id, s.appearance) for s in catalogue.species]  # fails before any work
    seed, size, quality = int(seed), int(image_size), int(jpeg_quality)
    tasks = [
        (seed, label, s.id, k, traits[label], int(photos_per_specimen), size, float(difficulty), quality)
        for label, s in enumerate(catalogue.species)
        for k in range(int(specimens_per_class))
    ]
    rows = [r for chunk in _run(_specimen_rows, tasks, int(workers), "synthetic specimens", "specimen") for r in chunk]
    ood_tasks = [
        (seed, i, min(i + OOD_PER_TASK, ood_images), size, quality) for i in range(0, ood_images, OOD_PER_TASK)
    ]
    ood = [
        r for chunk in _run(ood_rows, ood_tasks, int(workers), "ood images", f"x{OOD_PER_TASK} images") for r in chunk
    ]

    assignment = grouped_split([r["specimen"] for r in rows], [r["label"] for r in rows], fractions, seed)
    rows_by_split: dict[str, list[dict[str, Any]]] = {s: [] for s in (*TRAIN_SPLITS, "ood")}
    for r in rows:
        rows_by_split[assignment[r["specimen"]]].append(r)
    rows_by_split["ood"] = ood
    train = sorted(rows_by_split["train"], key=lambda r: (r["specimen"], r["sha256"]))
    mean_std = channel_mean_std(np.asarray(Image.open(io.BytesIO(r["image"])).convert("RGB")) for r in train)
    params = {
        "generator": "mycolens.data.synth",
        "synth_version": synth.SYNTH_VERSION,
        "image_size": size,
        "specimens_per_class": int(specimens_per_class),
        "photos_per_specimen": int(photos_per_specimen),
        "difficulty": float(difficulty),
        "ood_images": int(ood_images),
        "splits": fractions,
        "seed": seed,
        "jpeg_quality": quality,
        "jpeg_subsampling": "4:4:4",
    }
    return write_shards(
        out_dir, rows_by_split, catalogue, params=params, mean_std=mean_std, rows_per_file=rows_per_file
    )
