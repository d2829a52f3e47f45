"""The synthetic generator: deterministic bytes, grouped splits, OOD rows, decodable images, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mycolens.catalogue import Catalogue, load_catalogue
from mycolens.data import synth
from mycolens.data.baseline import colour_baseline
from mycolens.data.contact_sheet import contact_sheet
from mycolens.data.ood_rows import generate_ood_rows
from mycolens.data.shards import SPLITS, read_manifest, read_split
from mycolens.inference.preprocess import decode_image
from tests.conftest import make_shards

SIZE = 32
ARGS = dict(image_size=SIZE, specimens_per_class=3, photos_per_specimen=2, ood_images=6)  # JPEG quality 90


def _gen(out: Path, seed: int, workers: int, catalogue: Catalogue | None = None) -> Path:
    return make_shards(out, seed=seed, workers=workers, catalogue=catalogue, **ARGS)


def _files(shards: Path) -> dict[str, bytes]:
    return {str(p.relative_to(shards)): p.read_bytes() for p in sorted(shards.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same arguments with 1 and 2 workers, and another seed."""
    root = tmp_path_factory.mktemp("synth")
    _gen(root / "a", seed=3, workers=1)
    _gen(root / "b", seed=3, workers=2)
    _gen(root / "c", seed=4, workers=1)
    return {k: root / k for k in "abc"}


def test_same_arguments_give_identical_bytes_whatever_the_workers(runs: dict[str, Path]) -> None:
    a, b = _files(runs["a"]), _files(runs["b"])
    assert "manifest.json" in a and any(k.startswith("train/part-") for k in a)
    assert a.keys() == b.keys()
    for name in a:
        assert a[name] == b[name], f"{name} differs between workers=1 and workers=2"


def test_another_seed_gives_other_images(runs: dict[str, Path]) -> None:
    a, c = _files(runs["a"]), _files(runs["c"])
    assert a["manifest.json"] != c["manifest.json"]
    for split in SPLITS:
        imgs_a = set(read_split(runs["a"], split, ["sha256"]).column("sha256").to_pylist())
        imgs_c = set(read_split(runs["c"], split, ["sha256"]).column("sha256").to_pylist())
        assert not imgs_a & imgs_c, f"seed 3 and seed 4 share {split} images"


def test_splits_are_grouped_by_specimen_and_train_has_every_class(runs: dict[str, Path]) -> None:
    cat = load_catalogue()
    seen: dict[str, str] = {}
    for split in ("train", "val", "test"):
        rows = read_split(runs["a"], split, ["label", "species", "specimen"]).to_pylist()
        assert rows, f"empty {split} split"
        for r in rows:
            assert seen.setdefault(r["specimen"], split) == split, (
                f"{r['specimen']} is in {seen[r['specimen']]} and {split}"
            )
            assert cat.ids[r["label"]] == r["species"]
            assert r["specimen"].startswith(r["species"] + "-")
    train = read_split(runs["a"], "train", ["label", "specimen"]).to_pydict()
    assert sorted(set(train["label"])) == list(range(cat.num_classes))
    # each specimen keeps all its photos together
    per_specimen = {s: train["specimen"].count(s) for s in set(train["specimen"])}
    assert set(per_specimen.values()) == {ARGS["photos_per_specimen"]}


def test_ood_rows_and_manifest(runs: dict[str, Path]) -> None:
    ood = read_split(runs["a"], "ood").to_pylist()
    assert len(ood) == ARGS["ood_images"]
    assert {r["label"] for r in ood} == {-1} and {r["species"] for r in ood} == {""}
    assert len({r["specimen"] for r in ood}) == len(ood)
    manifest = read_manifest(runs["a"])
    params = manifest["params"]
    assert params["image_size"] == SIZE and params["jpeg_quality"] == 90 and params["seed"] == 3
    assert manifest["classes"] == load_catalogue().ids
    assert manifest["splits"]["ood"]["images"] == ARGS["ood_images"]
    assert all(0.0 < m < 1.0 for m in manifest["mean"]) and all(0.0 < s < 0.5 for s in manifest["std"])
    # the ingest path's synthetic OOD images are the same rows
    again = generate_ood_rows(ARGS["ood_images"], image_size=SIZE, seed=3, jpeg_quality=90)
    assert sorted(r["sha256"] for r in again) == sorted(r["sha256"] for r in ood)
    assert set(again[0]) >= {"image", "label", "species", "specimen", "sha256", "source"}


def test_images_decode_to_the_right_size(runs: dict[str, Path]) -> None:
    for split in SPLITS:
        for data in read_split(runs["a"], split, ["image"]).column("image").to_pylist():
            img = decode_image(data)
            assert img.size == (SIZE, SIZE) and img.mode == "RGB"
            assert data[:2] == b"\xff\xd8"  # JPEG


def test_species_without_appearance_is_a_clear_error(tmp_path: Path) -> None:
    data = load_catalogue().to_dict()  # to_dict() carries no appearance traits
    bare = Catalogue.from_dict({"species": data["classes"]})
    with pytest.raises(ValueError, match="cantharellus_cibarius.*appearance"):
        _gen(tmp_path / "out", seed=0, workers=1, catalogue=bare)
    assert not (tmp_path / "out").exists()


def test_bad_appearance_value_names_species_and_key() -> None:
    with pytest.raises(ValueError, match=r"'x'.*appearance\.cap = 'disc'"):
        synth.check_appearance("x", {"cap": "disc", "cap_hue": [0, 0.1], "cap_sat": [0, 1], "cap_val": [0, 1],
                                     "stem_hue": [0, 1], "underside": "gills", "stem": "plain"})  # fmt: skip


def test_render_shapes_and_ood_kinds() -> None:
    cat = load_catalogue()
    for size in (32, 64):
        rng = np.random.default_rng(0)
        sp = synth.make_specimen(synth.check_appearance(cat[0].id, cat[0].appearance), rng)
        img = synth.render_photo(sp, rng, size, difficulty=0.5)
        assert img.shape == (size, size, 3) and img.dtype == np.uint8 and img.std() > 5
    for seed in range(12):
        img = synth.render_ood(np.random.default_rng(seed), 32)
        assert img.shape == (32, 32, 3) and img.dtype == np.uint8


def test_colour_baseline_and_contact_sheet(runs: dict[str, Path], tmp_path: Path) -> None:
    result = colour_baseline(runs["a"], bins=8)
    assert 0.0 <= result["colour_baseline_accuracy"] <= 1.0
    manifest = read_manifest(runs["a"])
    assert result["train_images"] == manifest["splits"]["train"]["images"]
    assert result["test_images"] == manifest["splits"]["test"]["images"]
    json.dumps(result)
    out = contact_sheet(runs["a"], "train", tmp_path / "sheet.png", per_class=2)
    from PIL import Image

    with Image.open(out) as im:
        assert im.size[1] == 14 * 96 and im.format == "PNG"
