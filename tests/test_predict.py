"""Offline prediction (scripts/predict.py): the HTTP API's answer for a file and a folder, bad files reported per file."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from mycolens.data.shards import read_split
from mycolens.inference.onnx_model import OnnxClassifier
from mycolens.inference.preprocess import load_for_model

if TYPE_CHECKING:
    from tests.conftest_export import Workspace

from tests.serve_fixtures import PREDICTION_FIELDS

pytest_plugins = ["tests.conftest_export"]  # fixtures: workspace, exported


@pytest.fixture(scope="module")
def photos(workspace: Workspace, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of test-split JPEGs plus files that are not usable images (and a note that is not an image file)."""
    folder = tmp_path_factory.mktemp("photos")
    images = read_split(workspace.shards, "test", columns=["image"]).column("image").to_pylist()[:3]
    for i, data in enumerate(images):
        (folder / f"good{i}.jpg").write_bytes(data)
    (folder / "sub").mkdir()
    (folder / "sub" / "good3.JPG").write_bytes(images[0])
    (folder / "empty.png").write_bytes(b"")
    (folder / "garbage.jpg").write_bytes(b"this is not an image at all" * 10)
    (folder / "truncated.jpg").write_bytes(images[1][: len(images[1]) // 2])
    (folder / "notes.txt").write_text("not an image file name: skipped")
    return folder


def expected(exported: dict, path: Path, variant: str) -> dict:
    """What the API would answer for this file (same model folder, preprocessing and rule)."""
    model = OnnxClassifier.load(exported["dir"], variant)
    pre = model.preprocessing
    x = load_for_model(path.read_bytes(), pre["image_size"], pre["mean"], pre["std"])
    return model.answer(x[None], top_k=3)[0]


def test_predict_one_file(workspace: Workspace, exported: dict, photos: Path) -> None:
    proc = workspace.run("predict.py", f"path={photos / 'good0.jpg'}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    answer = json.loads(proc.stdout)
    assert set(answer) >= PREDICTION_FIELDS and answer["file"] == str(photos / "good0.jpg")
    assert answer["model"] == {"name": "mycolens", "version": exported["meta"]["version"], "variant": "int8"}
    want = expected(exported, photos / "good0.jpg", "int8")
    assert {k: answer[k] for k in PREDICTION_FIELDS} == want
    assert answer["verdict"] in ("edible", "do_not_eat", "uncertain") and len(answer["top_k"]) == 3


def test_predict_folder_reports_bad_files(workspace: Workspace, exported: dict, photos: Path, tmp_path: Path) -> None:
    proc = workspace.run("predict.py", f"path={photos}", "serve.variant=fp32")
    assert proc.returncode == 1, proc.stderr[-2000:]  # some files were rejected, none crashed the run
    records = {Path(r["file"]).name: r for r in json.loads(proc.stdout)}
    assert set(records) == {
        "good0.jpg",
        "good1.jpg",
        "good2.jpg",
        "good3.JPG",
        "empty.png",
        "garbage.jpg",
        "truncated.jpg",
    }
    assert records["empty.png"]["error"]["code"] == "empty"
    assert records["garbage.jpg"]["error"]["code"] == "not_image"
    assert records["truncated.jpg"]["error"]["code"] == "truncated"
    for name in ("good0.jpg", "good1.jpg", "good2.jpg", "good3.JPG"):
        assert set(records[name]) >= PREDICTION_FIELDS and "error" not in records[name]
        assert records[name]["model"]["variant"] == "fp32"
    assert {k: records["good1.jpg"][k] for k in PREDICTION_FIELDS} == expected(exported, photos / "good1.jpg", "fp32")
    assert records["good3.JPG"]["species"] == records["good0.jpg"]["species"]  # same bytes, same answer
    assert "3 of 7 files were not usable images" in proc.stderr and "Traceback" not in proc.stderr

    out = tmp_path / "predictions.csv"
    proc = workspace.run("predict.py", f"path={photos}", "format=csv", f"output={out}")
    assert proc.returncode == 1 and proc.stdout == ""
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert len(rows) == 7
    by_name = {Path(r["file"]).name: r for r in rows}
    assert by_name["garbage.jpg"]["error_code"] == "not_image" and by_name["garbage.jpg"]["species"] == ""
    assert by_name["good0.jpg"]["error_code"] == "" and by_name["good0.jpg"]["model_variant"] == "int8"
    assert by_name["good0.jpg"]["verdict"] in ("edible", "do_not_eat", "uncertain")


def test_predict_usage_errors_are_one_line(workspace: Workspace, exported: dict, tmp_path: Path) -> None:
    proc = workspace.run("predict.py", f"path={tmp_path / 'missing.jpg'}")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: no such file or folder: {tmp_path / 'missing.jpg'} (give path=IMAGE or path=FOLDER)"
    ]
