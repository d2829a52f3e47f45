"""Ingest of real photos: every bad file quarantined with its reason, upright RGB shards, grouped splits, clear errors."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mycolens.catalogue import load_catalogue
from mycolens.cli import UserError
from mycolens.data.ingest import ingest_folder
from mycolens.data.shards import SPLITS, read_manifest, read_split
from tests.conftest import ROOT

A, B = "cantharellus_cibarius", "omphalotus_illudens"
SMALL = dict(image_size=32, max_side=48, min_side=32, splits={"train": 0.6, "val": 0.2, "test": 0.2}, seed=7)
SMALL |= dict(ood_images=0, rows_per_file=2000, jpeg_quality=90)


def photo(path: Path, size: tuple[int, int] = (44, 36), seed: int = 0, mode: str = "RGB", fmt: str = "JPEG") -> Path:
    """A small random picture saved as `fmt`."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1], size[0], 4), dtype=np.uint8)
    img = Image.fromarray(arr, "RGBA").convert(mode) if mode != "RGBA" else Image.fromarray(arr, "RGBA")
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, fmt)
    return path


def jpeg_bytes(size: tuple[int, int] = (44, 36), seed: int = 0) -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def exif_rotated(path: Path) -> Path:
    """Stored 60x40, left half red, right half blue, EXIF orientation 6: upright it is 40x60 (32x48 stored) with red on top."""
    arr = np.zeros((40, 60, 3), np.uint8)
    arr[:, :30] = (255, 0, 0)
    arr[:, 30:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(arr).save(path, "JPEG", exif=exif.tobytes())
    return path


@pytest.fixture
def messy(tmp_path: Path) -> dict[str, Path]:
    """A photo folder with 12 good images and one of each kind of bad file, plus a small OOD folder."""
    src = tmp_path / "photos"
    for i in range(4):
        photo(src / A / f"a{i}.jpg", seed=i)
        photo(src / B / f"b{i}.jpg", seed=10 + i)
    photo(src / A / "big.png", size=(100, 80), seed=20, fmt="PNG")  # downscaled to 48x38
    exif_rotated(src / A / "exif.jpg")
    photo(src / B / "cmyk.jpg", seed=21, mode="CMYK")
    photo(src / B / "gray.png", seed=22, mode="L", fmt="PNG")
    photo(src / B / "rgba.png", seed=23, mode="RGBA", fmt="PNG")
    (src / A / "truncated.jpg").write_bytes(jpeg_bytes(seed=30)[:300])
    (src / A / "empty.jpg").write_bytes(b"")
    (src / B / "notes.jpg").write_text("this is not a photo\n")
    photo(src / "not_a_species" / "x.jpg", seed=31)
    (src / A / "zz_copy.jpg").write_bytes((src / A / "a0.jpg").read_bytes())
    photo(tmp_path / "secret.jpg", seed=32)
    os.symlink(tmp_path / "secret.jpg", src / A / "link.jpg")
    photo(src / B / "tiny.jpg", size=(20, 20), seed=33)
    photo(src / B / "anim.gif", seed=34, mode="P", fmt="GIF")
    ood = tmp_path / "ood"
    photo(ood / "street.jpg", seed=40)
    photo(ood / "cat.png", seed=41, fmt="PNG")
    (ood / "readme.jpg").write_text("not an image")
    return {"src": src, "ood": ood, "tmp": tmp_path}


def run(src: Path, out: Path, **kw):
    args = SMALL | {"workers": 1, "report_path": out.parent / f"{out.name}-report" / "report.json"} | kw
    return ingest_folder(src, out, load_catalogue(None), **args)


def all_rows(shards: Path) -> list[dict]:
    return [r for s in ("train", "val", "test") for r in read_split(shards, s).to_pylist()]


GOOD = {f"{A}/a{i}.jpg" for i in range(4)} | {f"{B}/b{i}.jpg" for i in range(4)}
GOOD |= {f"{A}/big.png", f"{A}/exif.jpg", f"{B}/cmyk.jpg", f"{B}/gray.png", f"{B}/rgba.png"}
BAD = {
    f"{A}/truncated.jpg": "truncated",
    f"{A}/empty.jpg": "empty",
    f"{B}/notes.jpg": "not_image",
    "not_a_species/x.jpg": "unknown_label",
    f"{A}/zz_copy.jpg": "duplicate",
    f"{A}/link.jpg": "outside_root",
    f"{B}/tiny.jpg": "too_small",
    f"{B}/anim.gif": "unsupported",
}


def test_messy_folder_report_and_shards(messy: dict[str, Path]) -> None:
    out = messy["tmp"] / "shards"
    report = run(messy["src"], out, ood_source=messy["ood"])
    assert (report.found, report.kept) == (len(GOOD) + len(BAD), len(GOOD))
    assert report.splits["ood"] == 2 and sum(report.splits.values()) == len(GOOD) + 2
    assert report.by_reason() == {
        "duplicate": 1,
        "empty": 1,
        "not_image": 2,
        "outside_root": 1,
        "too_small": 1,
        "truncated": 1,
        "unknown_label": 1,
        "unsupported": 1,
    }
    saved = json.loads(Path(report.report_path).read_text())
    got = {(q["root"], q["path"]): q for q in saved["quarantined"]}
    assert {p: q["reason"] for (root, p), q in got.items() if root == "source"} == BAD
    assert got[("ood_source", "readme.jpg")]["reason"] == "not_image"
    assert "a0.jpg" in got[("source", f"{A}/zz_copy.jpg")]["message"]
    # quarantined copies: content-hash names inside quarantine/, nothing read from outside the root
    qdir = Path(report.quarantine_dir)
    assert qdir == Path(report.report_path).parent / "quarantine"
    link = got[("source", f"{A}/link.jpg")]
    assert link["sha256"] == "" and link["copy"] == ""
    for q in saved["quarantined"]:
        if q["copy"]:
            data = (qdir.parent / q["copy"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == q["sha256"] and Path(q["copy"]).name.startswith(q["sha256"])
    assert all(p.name[:64] == hashlib.sha256(p.read_bytes()).hexdigest() for p in qdir.iterdir())
    assert not any(
        hashlib.sha256((messy["tmp"] / "secret.jpg").read_bytes()).hexdigest() in p.name for p in qdir.iterdir()
    )

    rows = all_rows(out)
    assert {r["source"] for r in rows} == GOOD
    by_source = {r["source"]: r for r in rows}
    for r in rows:
        img = Image.open(io.BytesIO(r["image"]))
        assert img.format == "JPEG" and img.mode == "RGB" and max(img.size) <= 48 and min(img.size) >= 32
        assert r["sha256"] == hashlib.sha256(r["image"]).hexdigest()
        assert r["specimen"] == r["source"] and r["species"] == r["source"].split("/")[0]
    assert Image.open(io.BytesIO(by_source[f"{A}/big.png"]["image"])).size == (48, 38)
    upright = Image.open(io.BytesIO(by_source[f"{A}/exif.jpg"]["image"]))
    assert upright.size == (32, 48) and upright.getexif().get(0x0112) is None
    top, bottom = np.asarray(upright)[5, 16], np.asarray(upright)[43, 16]
    assert top[0] > 200 and top[2] < 60 and bottom[2] > 200 and bottom[0] < 60  # red on top, blue below
    ood = read_split(out, "ood").to_pylist()
    assert sorted(r["source"] for r in ood) == ["ood/cat.png", "ood/street.jpg"]
    assert all(r["label"] == -1 and r["species"] == "" for r in ood)

    manifest = read_manifest(out)
    assert manifest["params"]["source"] == str(messy["src"]) and manifest["params"]["max_side"] == 48
    assert manifest["ingest"]["kept"] == len(GOOD) and len(manifest["mean"]) == 3
    assert sum(manifest["splits"][s]["images"] for s in ("train", "val", "test")) == len(GOOD)
    assert all(manifest["splits"][s]["images"] > 0 for s in SPLITS)
    assert report.summary().startswith(f"ingest: kept {len(GOOD)} of {len(GOOD) + len(BAD)} files")
    assert "; ood 2 of 3 files; quarantined 9 (duplicate 1, empty 1, not_image 2," in report.summary()


def test_same_input_same_bytes_any_worker_count(messy: dict[str, Path]) -> None:
    one, two = messy["tmp"] / "one", messy["tmp"] / "two"
    run(messy["src"], one, ood_source=messy["ood"], workers=1)
    run(messy["src"], two, ood_source=messy["ood"], workers=2)
    files = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file())
    assert Path("manifest.json") in files and Path("train/part-00000.parquet") in files
    assert files == sorted(p.relative_to(two) for p in two.rglob("*") if p.is_file())
    for rel in files:
        assert (one / rel).read_bytes() == (two / rel).read_bytes(), rel


def test_csv_observations_stay_in_one_split(tmp_path: Path) -> None:
    src = tmp_path / "root"
    rows = []
    for k, label in enumerate((A, B)):
        for obs in range(5):
            for view in range(2):
                rel = f"img/{label[:4]}_{obs}_{view}.jpg"
                photo(src / rel, seed=100 * k + 10 * obs + view)
                rows.append({"path": rel, "label": label, "observation": f"obs-{label[:4]}-{obs}"})
    photo(src / "img" / "solo.jpg", seed=999)
    photo(tmp_path / "outside.jpg", seed=998)
    rows += [
        {"path": "./img/solo.jpg", "label": A, "observation": ""},  # no observation: one specimen per file
        {"path": "../outside.jpg", "label": A, "observation": "x"},
        {"path": str(tmp_path / "outside.jpg"), "label": A, "observation": "x"},
        {"path": "img/gone.jpg", "label": B, "observation": "y"},
        {"path": "img/solo.jpg", "label": "boletus_edulus", "observation": "z"},
    ]
    with open(src / "labels.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["path", "label", "observation"])
        writer.writeheader()
        writer.writerows(rows)
    out = tmp_path / "shards"
    report = run(src, out, csv="labels.csv", ood_images=3)  # no ood_source: synthetic not-mushroom images
    assert report.kept == 21 and report.found == len(rows)
    ood = read_split(out, "ood").to_pylist()
    assert len(ood) == 3 and {(r["label"], r["species"], r["source"]) for r in ood} == {(-1, "", "synthetic")}
    assert "; ood 3 synthetic;" in report.summary()
    reasons = {q.path: q.reason for q in report.quarantined}
    assert reasons == {
        "../outside.jpg": "outside_root",
        str(tmp_path / "outside.jpg"): "outside_root",
        "img/gone.jpg": "missing",
        "img/solo.jpg": "unknown_label",
    }
    assert "boletus_edulis" in next(q.message for q in report.quarantined if q.reason == "unknown_label")
    split_of: dict[str, set[str]] = {}
    for split in ("train", "val", "test"):
        for r in read_split(out, split).to_pylist():
            split_of.setdefault(r["specimen"], set()).add(split)
    assert len(split_of) == 11 and all(len(s) == 1 for s in split_of.values())
    assert "img/solo.jpg" in split_of and "obs-cant-0" in split_of
    assert {next(iter(s)) for s in split_of.values()} == {"train", "val", "test"}


def test_no_usable_photo_is_a_clear_error(tmp_path: Path) -> None:
    src = tmp_path / "photos"
    (src / A).mkdir(parents=True)
    (src / A / "notes.jpg").write_text("hello")
    (src / A / "empty.jpg").write_bytes(b"")
    report_path = tmp_path / "ingest" / "report.json"
    with pytest.raises(
        UserError, match=r"no usable photo in .*photos: 2 files found, quarantined 1 empty, 1 not_image"
    ) as err:
        run(src, tmp_path / "shards", report_path=report_path)
    assert str(report_path) in str(err.value)
    assert len(json.loads(report_path.read_text())["quarantined"]) == 2
    assert not (tmp_path / "shards").exists()


def script(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "DVC_NO_ANALYTICS": "1", "WANDB_MODE": "offline"}
    cmd = [sys.executable, str(ROOT / "scripts" / "ingest.py"), *args, f"hydra.run.dir={cwd / 'run'}"]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_script_missing_folder_exit_2(tmp_path: Path) -> None:
    proc = script(f"source={tmp_path / 'nope'}", f"paths.data_dir={tmp_path / 'data'}", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines == [
        f"error: source folder not found: {tmp_path / 'nope'} (source=DIR: a folder with one subfolder per species id)"
    ]
    assert not (tmp_path / "data").exists()


def test_script_ingests_a_folder(messy: dict[str, Path]) -> None:
    tmp = messy["tmp"]
    overrides = [
        "data.image_size=32",
        "data.ingest.max_side=48",
        "data.workers=1",
        f"data.ingest.ood_source={messy['ood']}",
    ]
    proc = script(f"source={messy['src']}", f"paths.data_dir={tmp / 'data'}", *overrides, cwd=tmp)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert (
        lines[-2].startswith(f"ingest: kept {len(GOOD)} of {len(GOOD) + len(BAD)} files") and "duplicate 1" in lines[-2]
    )
    assert (
        f"shards: {tmp / 'data' / 'shards'}" in lines[-1] and str(tmp / "data" / "ingest" / "report.json") in lines[-1]
    )
    assert {r["source"] for r in all_rows(tmp / "data" / "shards")} == GOOD
    assert (tmp / "run" / "ingest.log").exists()


def test_bad_arguments_are_clear_errors(messy: dict[str, Path]) -> None:
    src, tmp = messy["src"], messy["tmp"]
    with pytest.raises(UserError, match="source folder not found"):
        run(tmp / "nowhere", tmp / "shards")
    with pytest.raises(UserError, match="CSV file not found: labels.csv"):
        run(src, tmp / "shards", csv="labels.csv")
    (tmp / "bad.csv").write_text("file,species\na.jpg,x\n")
    with pytest.raises(UserError, match=r"bad.csv: needs a header with columns path,label"):
        run(src, tmp / "shards", csv=tmp / "bad.csv")
    with pytest.raises(UserError, match="OOD folder not found"):
        run(src, tmp / "shards", ood_source=tmp / "no-ood")
    with pytest.raises(UserError, match="report folder .* is inside the photo folder"):
        run(src, tmp / "shards", report_path=src / "report.json")
    with pytest.raises(UserError, match="shards folder .* is inside the photo folder"):
        run(src, src / A / "shards")
    with pytest.raises(UserError, match="inside the shards folder"):
        run(src, tmp / "shards", report_path=tmp / "shards" / "report.json")
    with pytest.raises(UserError, match="splits must be"):
        run(src, tmp / "shards", splits={"train": 0.8, "holdout": 0.2})
    with pytest.raises(UserError, match="min_side <= max_side"):
        run(src, tmp / "shards", min_side=64, max_side=48)
    assert not (tmp / "shards").exists() and not (src / A / "shards").exists()
