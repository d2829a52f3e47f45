"""ONNX export: agreement with PyTorch on real images, dynamic batch, one self-contained file, int8, model.json,
and an interrupted or refused export that leaves nothing half-written."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import pytest

from mycolens.catalogue import load_catalogue
from mycolens.cli import UserError
from mycolens.data.inputs import load_images
from mycolens.export import ExportCheckFailed, export_model
from mycolens.export.checkpoint import load_checkpoint, torch_logits
from mycolens.export.onnx_export import onnx_logits, session
from mycolens.inference.onnx_model import OnnxClassifier, verify_model_dir
from mycolens.utils.io import sha256_file
from mycolens.verdict.calibration import OOD_SCORE
from tests.conftest import OOD_SET_NAMES

if TYPE_CHECKING:
    from tests.conftest_export import Workspace

pytest_plugins = ["tests.conftest_export"]  # fixtures: workspace, exported

CONTRACT_KEYS = {
    "name",
    "version",
    "catalogue",
    "classes",
    "preprocessing",
    "input",
    "output",
    "temperature",
    "verdict",
    "ood",
    "files",
    "safety_gate",
    "source",
    "versions",
}
MODEL_FILES = {"model.onnx", "model.int8.onnx", "model.json", "reference.json"}


def folder_state(folder: Path) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted(folder.iterdir())} if folder.exists() else {}


def installed_copy(exported: dict, target: Path) -> dict[str, str]:
    """Copy the session's export to `target`, as a served model folder; its folder_state to compare with afterwards."""
    shutil.copytree(exported["dir"], target)
    return folder_state(target)


def leftovers(parent: Path) -> list[str]:
    """Temporary files or folders an export left beside its target."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(".") or p.name.endswith(".tmp"))


def val_inputs(ws: Workspace, meta: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    pre = meta["preprocessing"]
    return load_images(ws.shards, "val", pre["image_size"], pre["mean"], pre["std"])


def test_fp32_matches_pytorch_on_real_validation_images(workspace: Workspace, exported: dict) -> None:
    meta, cfg = exported["meta"], workspace.cfg()
    x, _ = val_inputs(workspace, meta)
    assert len(x) > 0
    ref = torch_logits(load_checkpoint(workspace.best).net, x)
    got = onnx_logits(session(exported["dir"] / "model.onnx"), x)
    assert np.abs(ref - got).max() <= cfg.export.check.max_abs_diff
    assert (ref.argmax(1) == got.argmax(1)).mean() >= cfg.export.check.min_top1_agreement
    check = meta["checks"]["fp32_vs_torch"]
    assert check["images"] == len(x) and check["max_abs_diff"] <= cfg.export.check.max_abs_diff
    assert "onnx fp32 vs pytorch" in exported["stdout"] and "top-1 agreement" in exported["stdout"]
    assert "safety gate" in exported["stdout"] and str(exported["dir"]) in exported["stdout"]


def test_dynamic_batch(workspace: Workspace, exported: dict) -> None:
    meta = exported["meta"]
    x, _ = val_inputs(workspace, meta)
    net = load_checkpoint(workspace.best).net
    x7 = np.concatenate([x] * (7 // len(x) + 1))[:7]
    for variant in ("model.onnx", "model.int8.onnx"):
        sess = session(exported["dir"] / variant)
        assert sess.get_inputs()[0].name == "input" and sess.get_outputs()[0].name == "logits"
        assert (
            sess.get_inputs()[0].shape[0] not in (1, 2) and sess.get_inputs()[0].shape[1:] == meta["input"]["shape"][1:]
        )
        for batch in (x7[:1], x7):
            out = sess.run(None, {"input": batch})[0]
            assert out.shape == (len(batch), len(meta["classes"]))
    fp32 = session(exported["dir"] / "model.onnx")
    np.testing.assert_allclose(fp32.run(None, {"input": x7[:1]})[0], torch_logits(net, x7[:1]), atol=1e-3)
    np.testing.assert_allclose(fp32.run(None, {"input": x7})[0], torch_logits(net, x7), atol=1e-3)


def test_self_contained_files(exported: dict) -> None:
    folder = exported["dir"]
    assert {p.name for p in folder.iterdir()} - {"metrics.json"} == MODEL_FILES
    assert not list(folder.rglob("*.data"))
    for name in ("model.onnx", "model.int8.onnx"):
        model = onnx.load(str(folder / name), load_external_data=False)
        assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
        onnx.checker.check_model(model)
    assert onnx.load(str(folder / "model.onnx")).opset_import[0].version == 20


def test_int8_is_static_qdq_and_agrees_with_fp32(workspace: Workspace, exported: dict) -> None:
    meta, cfg = exported["meta"], workspace.cfg()
    ops = {n.op_type for n in onnx.load(str(exported["dir"] / "model.int8.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    # the classifier's weights shrink to int8; the score heads (class centres, precision matrix) stay fp32
    heads = sum(
        onnx.numpy_helper.to_array(i).nbytes
        for i in onnx.load(str(exported["dir"] / "model.int8.onnx")).graph.initializer
        if i.data_type == onnx.TensorProto.FLOAT and i.name in _score_head_inputs(exported["dir"] / "model.int8.onnx")
    )
    assert meta["files"]["int8"]["bytes"] - heads < (meta["files"]["fp32"]["bytes"] - heads) / 2
    x, _ = val_inputs(workspace, meta)
    fp32 = onnx_logits(session(exported["dir"] / "model.onnx"), x)
    int8 = onnx_logits(session(exported["dir"] / "model.int8.onnx"), x)
    assert np.isfinite(int8).all()
    assert (fp32.argmax(1) == int8.argmax(1)).mean() >= cfg.export.check.int8_min_top1_agreement
    q = meta["quantization"]
    assert q["format"] == "QDQ" and q["per_channel"] is True
    assert q["activation_type"] in ("QUInt8", "QInt8") and q["weight_type"] == "QInt8"
    assert q["calibration_images"] == min(
        cfg.export.quantize.calibration_images, int(np.sum(_split_sizes(workspace)["train"]))
    )


def _score_head_inputs(path: Path) -> set[str]:
    """Tensors read by the nodes that do not feed the logits (the OOD score heads)."""
    from mycolens.export.quantize import score_nodes

    heads = set(score_nodes(path, write_names=False))
    return {name for n in onnx.load(str(path)).graph.node if n.name in heads for name in n.input}


def _split_sizes(ws: Workspace) -> dict[str, int]:
    from mycolens.data.shards import read_manifest

    return {k: v["images"] for k, v in read_manifest(ws.shards)["splits"].items()}


def test_model_json_contract(workspace: Workspace, exported: dict) -> None:
    meta, folder, cfg = exported["meta"], exported["dir"], workspace.cfg()
    assert set(meta) >= CONTRACT_KEYS
    cat = load_catalogue()
    fp32_sha = sha256_file(folder / "model.onnx")
    assert meta["name"] == "mycolens" and meta["version"] == f"{cfg.export.version}+{fp32_sha[:12]}"
    assert meta["classes"] == cat.ids and [c["id"] for c in meta["catalogue"]["classes"]] == cat.ids
    assert meta["catalogue"] == load_checkpoint(workspace.best).catalogue.to_dict()
    pre = meta["preprocessing"]
    assert set(pre) == {"image_size", "mean", "std", "resize", "layout", "dtype", "scale"}
    assert pre["image_size"] == 32 and pre["resize"] == "shorter_side_bilinear_center_crop"
    assert (pre["layout"], pre["dtype"], pre["scale"]) == ("NCHW", "float32", "0-1")
    assert meta["input"] == {"name": "input", "shape": [-1, 3, 32, 32], "datatype": "FP32"}
    assert meta["output"] == {"name": "logits", "shape": [-1, cat.num_classes], "datatype": "FP32"}
    assert 0.05 <= meta["temperature"] <= 20
    assert set(meta["verdict"]) == {
        "edible_min_confidence",
        "poison_max",
        "do_not_eat_min",
        "ood_threshold",
        "feature_threshold",
        "input_checks",
    }
    for key in ("edible_min_confidence", "poison_max", "do_not_eat_min"):
        assert meta["verdict"][key] == cfg.export.verdict[key]
    ood = meta["ood"]
    assert (ood["score"], ood["threshold"], ood["keep_in_distribution"]) == (
        OOD_SCORE,
        meta["verdict"]["ood_threshold"],
        cfg.export.calibration.keep_in_distribution,
    )
    assert ood["feature"]["threshold"] == meta["verdict"]["feature_threshold"]
    by_variant = meta["verdict_by_variant"]
    assert set(by_variant) == {"fp32", "int8"} and by_variant["fp32"] == meta["verdict"]
    assert by_variant["int8"]["feature_threshold"] != by_variant["fp32"]["feature_threshold"]  # its own outputs
    # every check of conf/export is in the rule, with its bound fitted on the training split (never a test set)
    checks = [(c["name"], c["bound"], c["reason"]) for c in meta["verdict"]["input_checks"]]
    assert checks == [(c.stat, c.bound, c.reason) for c in cfg.export.ood.input_checks.checks]
    assert ood["fitted_on"]["input_check_bounds"] == "train" and ood["fitted_on"]["feature_threshold"] == "val"
    assert "test" not in ood["fitted_on"].values()  # no test split fits anything
    assert set(meta["outputs"]) == {"logits", "feature_score", "input_stats"}
    for name in ("model.onnx", "model.int8.onnx"):  # logits first: every runtime reads them by position too
        assert [o.name for o in session(folder / name).get_outputs()] == ["logits", "feature_score", "input_stats"]
    for variant, name in (("fp32", "model.onnx"), ("int8", "model.int8.onnx")):
        entry = meta["files"][variant]
        assert entry == {"path": name, "sha256": sha256_file(folder / name), "bytes": (folder / name).stat().st_size}
    gate = meta["safety_gate"]
    assert gate["split"] == "test" and gate["limit"] == cfg.export.safety_gate.limit
    assert set(gate["unsafe_edible_rate"]) == {"fp32", "int8"}
    names = OOD_SET_NAMES
    assert set(gate["ood"]["int8"]) == names and set(gate["ood"]["fp32"]) == names
    assert gate["passed"] == (
        max(gate["unsafe_edible_rate"].values()) <= gate["limit"]
        and not gate["ood_below_limit"]
        and max(gate["ood_edible"].values()) <= gate["max_ood_edible"]
    )
    src = meta["source"]
    assert set(src) == {"ckpt", "ckpt_sha256", "backbone", "params", "flops"}
    assert src["ckpt_sha256"] == sha256_file(workspace.best) and src["backbone"] == "small_cnn"
    assert src["params"] > 0 and src["flops"] > src["params"]
    assert {"mycolens", "torch", "onnx", "onnxruntime", "python"} <= set(meta["versions"])
    if gate["passed"]:
        for variant in ("fp32", "int8"):
            assert verify_model_dir(folder, variant)["version"] == meta["version"]
            assert OnnxClassifier.load(folder, variant).model_info["version"] == meta["version"]


def test_export_defaults_to_the_compressed_checkpoint(workspace: Workspace, tmp_path: Path) -> None:
    cfg = workspace.cfg(root=tmp_path)
    assert Path(cfg.export.ckpt_path) == tmp_path / "models" / "compressed.ckpt"
    assert cfg.export.opset == 20
    with pytest.raises(UserError, match="compressed.ckpt"):
        export_model(
            cfg.export.ckpt_path,
            cfg.export.output_dir,
            workspace.shards,
            load_catalogue(),
            workspace.export_settings(root=tmp_path),
        )
    assert not (tmp_path / "models" / "export").exists()


def test_same_checkpoint_same_bytes_same_version(workspace: Workspace, exported: dict, tmp_path: Path) -> None:
    settings = workspace.export_settings()
    meta = export_model(workspace.best, tmp_path / "again", workspace.shards, load_catalogue(), settings)
    assert meta["version"] == exported["meta"]["version"]
    assert meta["files"] == exported["meta"]["files"]  # int8 calibration is seeded and deterministic too
    assert meta["temperature"] == exported["meta"]["temperature"]


def test_splits_decoded_on_access_give_the_same_model(
    workspace: Workspace, exported: dict, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Above the inputs budget (data.cache_max_gb; 0 here) every split is decoded a batch at a time: the same
    files, temperature and abstention rule as the in-memory export."""
    settings = workspace.export_settings()
    with caplog.at_level("INFO", logger="mycolens.data.inputs"):
        meta = export_model(
            workspace.best, tmp_path / "lazy", workspace.shards, load_catalogue(), settings, inputs_max_gb=0
        )
    assert "val inputs: decoded on access" in caplog.text and "train inputs: decoded on access" in caplog.text
    assert meta["files"] == exported["meta"]["files"]
    for key in ("version", "temperature", "verdict"):
        assert meta[key] == exported["meta"][key], key


def test_interrupted_export_leaves_the_old_model(
    workspace: Workspace, exported: dict, tmp_path: Path, monkeypatch
) -> None:
    import mycolens.export.pipeline as pipeline

    target = tmp_path / "models" / "export"
    before = installed_copy(exported, target)

    def interrupted(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt  # Ctrl-C after model.onnx was written, while quantizing

    monkeypatch.setattr(pipeline, "quantize_int8", interrupted)
    settings = workspace.export_settings()
    for out in (target, tmp_path / "fresh" / "export"):
        with pytest.raises(KeyboardInterrupt):
            export_model(workspace.best, out, workspace.shards, load_catalogue(), settings)
    assert folder_state(target) == before
    assert not (tmp_path / "fresh" / "export").exists()
    assert leftovers(target.parent) == [] and leftovers(tmp_path / "fresh") == []


def test_failed_check_writes_nothing(workspace: Workspace, exported: dict, tmp_path: Path) -> None:
    settings = workspace.export_settings("export.check.max_abs_diff=0.0", "export.check.min_top1_agreement=1.01")
    target = tmp_path / "export"
    with pytest.raises(ExportCheckFailed, match="ONNX fp32 differs from PyTorch"):
        export_model(workspace.best, target, workspace.shards, load_catalogue(), settings)
    assert not target.exists() and leftovers(tmp_path) == []


def test_read_only_target_is_refused_and_left_alone(
    workspace: Workspace, exported: dict, tmp_path: Path, monkeypatch
) -> None:
    import mycolens.export.pipeline as pipeline

    parent = tmp_path / "models"
    target = parent / "export"
    before = installed_copy(exported, target)
    if os.geteuid() == 0:  # root ignores permission bits: answer os.access as the kernel would for anyone else
        real_access = os.access
        read_only = {parent, target}
        monkeypatch.setattr(
            pipeline.os,
            "access",
            lambda p, mode: False if Path(p) in read_only and mode & os.W_OK else real_access(p, mode),
        )
    for folder in (target, parent):
        folder.chmod(0o555)
    try:
        with pytest.raises(UserError, match="read-only"):
            export_model(workspace.best, target, workspace.shards, load_catalogue(), workspace.export_settings())
    finally:
        for folder in (parent, target):
            folder.chmod(0o755)
    assert folder_state(target) == before and leftovers(parent) == []


def test_failure_while_swapping_folders_keeps_the_old_model(
    workspace: Workspace, exported: dict, tmp_path: Path, monkeypatch
) -> None:
    import mycolens.utils.io as io

    target = tmp_path / "models" / "export"
    before = installed_copy(exported, target)
    real_replace = os.replace

    def refuse_moving_the_old_folder(src: Any, dst: Any) -> None:
        if Path(src) == target:
            raise PermissionError(13, "Permission denied", str(src))
        real_replace(src, dst)

    monkeypatch.setattr(io.os, "replace", refuse_moving_the_old_folder)
    with pytest.raises(PermissionError):
        export_model(workspace.best, target, workspace.shards, load_catalogue(), workspace.export_settings())
    assert folder_state(target) == before and leftovers(target.parent) == []
