"""A contact sheet: a grid PNG of a split's images, one row per class (or rows of OOD images)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

from mycolens.data.shards import read_manifest, read_split
from mycolens.inference.preprocess import decode_image
from mycolens.utils.io import atomic_path

LABEL_W = 170


def contact_sheet(shards_dir: str | Path, split: str, out_png: str | Path, per_class: int = 6, tile: int = 96) -> Path:
    """Write a PNG grid of the first `per_class` images of each class in `split` (OOD: rows of `per_class`)."""
    manifest = read_manifest(shards_dir)
    table = read_split(shards_dir, split, columns=["image", "label", "specimen", "sha256"]).to_pylist()
    table.sort(key=lambda r: (r["label"], r["specimen"], r["sha256"]))
    names = {i: c["common_name"] for i, c in enumerate(manifest["catalogue"]["classes"])}
    if split == "ood":
        rows = [
            ("not a mushroom", table[i : i + per_class]) for i in range(0, min(len(table), 4 * per_class), per_class)
        ]
    else:
        rows = [(names[lab], [r for r in table if r["label"] == lab][:per_class]) for lab in sorted(names)]
    sheet = Image.new("RGB", (LABEL_W + per_class * tile, max(len(rows), 1) * tile), (250, 250, 248))
    draw = ImageDraw.Draw(sheet)
    for y, (name, items) in enumerate(rows):
        draw.text((6, y * tile + tile // 2 - 6), name, fill=(20, 20, 20))
        for x, r in enumerate(items):
            img = decode_image(r["image"]).resize((tile, tile), Image.LANCZOS)
            sheet.paste(img, (LABEL_W + x * tile, y * tile))
    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        sheet.save(tmp, format="PNG")
    return out_png
