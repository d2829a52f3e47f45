"""Named out-of-distribution test sets, written as image files: held-out procedural families and real images.

Real images come from packages already installed (scikit-image's and scikit-learn's bundled sample data): everyday
and scientific photos, crops of them, handwritten digits and faces. They are test data only: nothing here is
used for outlier exposure or to fit a threshold (mycolens.ood.fit uses training and validation images alone).
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mycolens.data.outliers import render_outliers
from mycolens.inference.preprocess import decode_image, normalize, resize_center_crop
from mycolens.utils.io import atomic_dir

INDEX = "index.json"
PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg")


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def real_photos() -> list[tuple[str, Image.Image]]:
    """Everyday and scientific photos bundled with scikit-image and scikit-learn (sorted by name)."""
    out = []
    sk = resources.files("skimage") / "data"
    for entry in sorted(sk.iterdir(), key=lambda p: p.name):
        if entry.name.lower().endswith(PHOTO_SUFFIXES):
            out.append((f"skimage-{Path(entry.name).stem}", Image.open(io.BytesIO(entry.read_bytes())).convert("RGB")))
    sl = resources.files("sklearn.datasets") / "images"
    for entry in sorted(sl.iterdir(), key=lambda p: p.name):
        if entry.name.lower().endswith(PHOTO_SUFFIXES):
            out.append((f"sklearn-{Path(entry.name).stem}", Image.open(io.BytesIO(entry.read_bytes())).convert("RGB")))
    return out


def photo_crops(photos: Sequence[tuple[str, Image.Image]], per_photo: int, seed: int) -> list[tuple[str, Image.Image]]:
    """Random square crops (a quarter to all of the shorter side) of each photo: real content framed like a close-up."""
    rng = np.random.default_rng(seed)
    out = []
    for name, img in photos:
        w, h = img.size
        for k in range(per_photo):
            side = int(min(w, h) * rng.uniform(0.25, 1.0))
            x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
            out.append((f"{name}-crop{k}", img.crop((x, y, x + side, y + side))))
    return out


def digits() -> list[tuple[str, Image.Image]]:
    """scikit-learn's 1,797 handwritten digits (8x8 greyscale)."""
    from sklearn.datasets import load_digits

    images = load_digits().images
    return [
        (f"digit-{i:04d}", Image.fromarray((255 - im * 255 / 16).astype(np.uint8), "L")) for i, im in enumerate(images)
    ]


def faces() -> list[tuple[str, Image.Image]]:
    """scikit-image's 200 Labeled Faces in the Wild crops (25x25 greyscale)."""
    arr = np.load(io.BytesIO((resources.files("skimage") / "data" / "lfw_subset.npy").read_bytes()))
    return [
        (f"face-{i:03d}", Image.fromarray((np.clip(a, 0, 1) * 255).astype(np.uint8), "L")) for i, a in enumerate(arr)
    ]


def build_ood_sets(
    out_dir: str | Path,
    *,
    image_size: int,
    seed: int,
    held_out_families: Sequence[str],
    family_images: int,
    crops_per_photo: int,
) -> dict[str, Any]:
    """Write out_dir/<set>/*.png and out_dir/index.json atomically; returns the index."""
    sets: dict[str, tuple[str, list[tuple[str, Image.Image]]]] = {}
    for family in held_out_families:
        imgs = render_outliers([family], family_images, image_size, seed)
        sets[f"family_{family}"] = (
            f"procedural family {family!r}, never in outlier exposure",
            [(f"{family}-{i:04d}", Image.fromarray(im)) for i, im in enumerate(imgs)],
        )
    photos = real_photos()
    sets["real_photos"] = ("scikit-image and scikit-learn sample photos (whole)", photos)
    sets["real_photo_crops"] = (
        f"{crops_per_photo} random square crops of each real photo",
        photo_crops(photos, crops_per_photo, seed),
    )
    sets["real_digits"] = ("scikit-learn handwritten digits", digits())
    sets["real_faces"] = ("scikit-image LFW face crops", faces())
    index: dict[str, Any] = {
        "use": "test only: never outlier exposure, never threshold fitting",
        "seed": int(seed),
        "sets": {},
    }
    with atomic_dir(Path(out_dir)) as tmp:
        for name, (source, images) in sets.items():
            (tmp / name).mkdir()
            for stem, img in images:
                (tmp / name / f"{stem}.png").write_bytes(_png(img))
            index["sets"][name] = {"images": len(images), "source": source}
        (tmp / INDEX).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return index


def ood_set_names(ood_dir: str | Path) -> list[str]:
    """The set names of an ood_sets folder (sorted)."""
    index_path = Path(ood_dir) / INDEX
    if not index_path.is_file():
        raise FileNotFoundError(f"no OOD test sets in {ood_dir}: run `python scripts/ood_sets.py` first")
    return sorted(json.loads(index_path.read_text())["sets"])


def load_ood_sets(
    ood_dir: str | Path, image_size: int, mean: Sequence[float], std: Sequence[float]
) -> dict[str, np.ndarray]:
    """Every set of an ood_sets folder as float32 NCHW model inputs (serving's decode, resize, crop, normalize)."""
    ood_dir = Path(ood_dir)
    out = {}
    for name in ood_set_names(ood_dir):
        files = sorted((ood_dir / name).glob("*.png"))
        crops = [resize_center_crop(decode_image(p.read_bytes()), image_size) for p in files]
        out[name] = (
            normalize(np.stack(crops), mean, std) if crops else np.zeros((0, 3, image_size, image_size), np.float32)
        )
    return out
