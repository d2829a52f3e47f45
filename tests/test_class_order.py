"""Training, export, evaluation and serving agree on the class order (the catalogue's); another order is refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

from mycolens.catalogue import DEFAULT_CATALOGUE, Catalogue, load_catalogue
from mycolens.cli import UserError
from mycolens.data.inputs import load_images
from mycolens.data.shards import ShardsError
from mycolens.evaluation.evaluate import evaluate_variants
from mycolens.export import export_model
from mycolens.export.checkpoint import load_checkpoint, torch_logits
from mycolens.inference.onnx_model import OnnxClassifier
from mycolens.training.run import build_datamodule, checkpoint_summary
from tests.conftest_export import evaluation_args

if TYPE_CHECKING:
    from tests.conftest_export import Workspace

pytest_plugins = ["tests.conftest_export"]  # fixtures: workspace, exported

CAT = load_catalogue()


@pytest.fixture
def reversed_catalogue(tmp_path: Path) -> Path:
    """The bundled catalogue with its species in reverse order (same ids, same edibility)."""
    data = yaml.safe_load(DEFAULT_CATALOGUE.read_text())
    data["species"] = data["species"][::-1]
    path = tmp_path / "reversed.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    assert load_catalogue(path).ids == CAT.ids[::-1]
    return path


def test_every_stage_uses_the_catalogue_order(workspace: Workspace, exported: dict, tmp_path: Path) -> None:
    meta = exported["meta"]
    assert checkpoint_summary(workspace.best)["classes"] == CAT.ids  # training
    assert meta["classes"] == CAT.ids  # export
    assert [c["id"] for c in meta["catalogue"]["classes"]] == CAT.ids
    assert [c["edibility"] for c in meta["catalogue"]["classes"]] == [s.edibility for s in CAT.species]
    for variant in ("fp32", "int8"):  # serving
        assert OnnxClassifier.load(exported["dir"], variant).catalogue.ids == CAT.ids

    # the same image gets the same species name from PyTorch (index -> catalogue id) and from serving
    pre = meta["preprocessing"]
    x, _ = load_images(workspace.shards, "test", pre["image_size"], pre["mean"], pre["std"])
    torch_ids = [CAT.ids[i] for i in torch_logits(load_checkpoint(workspace.best).net, x).argmax(1)]
    served = OnnxClassifier.load(exported["dir"], "fp32").answer(x, top_k=1)
    assert [a["species"] for a in served] == torch_ids
    assert [a["edibility"] for a in served] == [CAT[i].edibility for i in torch_ids]

    # evaluation: the same per-class predictions from the checkpoint and from its ONNX export
    report = evaluate_variants(
        workspace.shards,
        CAT,
        {"teacher": workspace.best, "onnx_fp32": exported["dir"] / "model.onnx"},
        served="onnx_fp32",
        **evaluation_args(workspace.cfg()),
        reports_dir=tmp_path,
        latency={"batch_sizes": [1], "repeats": 1, "warmup": 0},
    )
    assert report["classes"] == CAT.ids
    assert report["variants"]["teacher"]["accuracy"] == pytest.approx(report["variants"]["onnx_fp32"]["accuracy"])
    assert report["variants"]["teacher"]["poison_cost"] == pytest.approx(report["variants"]["onnx_fp32"]["poison_cost"])


def test_reversed_catalogue_is_refused_by_export(
    workspace: Workspace, reversed_catalogue: Path, tmp_path: Path
) -> None:
    settings = workspace.export_settings()
    with pytest.raises(UserError, match="order and edibility must match"):
        export_model(
            workspace.best, tmp_path / "export", workspace.shards, load_catalogue(reversed_catalogue), settings
        )
    assert not (tmp_path / "export").exists()


def test_reversed_catalogue_is_refused_by_evaluation(
    workspace: Workspace, exported: dict, reversed_catalogue: Path, tmp_path: Path
) -> None:
    for variant in ({"teacher": workspace.best}, {"onnx_int8": exported["dir"] / "model.int8.onnx"}):
        with pytest.raises((UserError, ShardsError), match="class order|order and edibility"):
            evaluate_variants(
                workspace.shards,
                load_catalogue(reversed_catalogue),
                variant,
                served=next(iter(variant)),
                **evaluation_args(workspace.cfg()),
                reports_dir=tmp_path,
            )
    assert not (tmp_path / "metrics.json").exists()


def test_reversed_catalogue_is_refused_by_training_data(workspace: Workspace, reversed_catalogue: Path) -> None:
    datamodule = build_datamodule(workspace.cfg(f"catalogue={reversed_catalogue}"))
    with pytest.raises(ShardsError, match="class order"):
        datamodule.setup("fit")


def test_model_json_catalogue_with_other_edibility_is_refused(
    workspace: Workspace, exported: dict, tmp_path: Path
) -> None:
    """A model folder whose catalogue disagrees with the configured one (here: one edibility flipped) is not evaluated."""
    folder = tmp_path / "export"
    shutil.copytree(exported["dir"], folder)
    meta = json.loads((folder / "model.json").read_text())
    meta["catalogue"]["classes"][0]["edibility"] = "poisonous"
    (folder / "model.json").write_text(json.dumps(meta))
    other = Catalogue.from_dict(meta["catalogue"])
    assert other.ids == CAT.ids and other.dangerous_mask != CAT.dangerous_mask
    with pytest.raises(UserError, match="order and edibility"):
        evaluate_variants(
            workspace.shards,
            CAT,
            {"onnx_fp32": folder / "model.onnx"},
            served="onnx_fp32",
            **evaluation_args(workspace.cfg()),
            reports_dir=tmp_path,
        )
