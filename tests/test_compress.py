"""Compression: real torch-pruning channel removal, distillation, weights_only checkpoints, the Hydra entry point."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from mycolens.catalogue import load_catalogue
from mycolens.compression import DistillationModule, count_ops, distillation_loss, prune_network, save_compressed
from mycolens.compression.run import compress
from mycolens.models.loading import checkpoint_meta, load_classifier
from mycolens.models.module import MushroomClassifier
from tests.compress_fixtures import random_classifier, save_teacher, train_tiny_teacher
from tests.conftest import compose, last_line, run_overrides, run_script

BACKBONES = ["small_cnn", "resnet18", "mobilenet_v3_small", "efficientnet_b0"]


@pytest.fixture(scope="session")
def trained_teacher(tmp_path_factory: pytest.TempPathFactory, tiny_shards: Path) -> Path:
    return train_tiny_teacher(tmp_path_factory.mktemp("teacher"), tiny_shards)


@pytest.fixture(scope="module")
def default_ratio(tmp_path_factory: pytest.TempPathFactory) -> float:
    return float(compose([], tmp_path_factory.mktemp("cfg")).compress.pruning_ratio)


def stage_cfg(tmp: Path, shards: Path, teacher: Path, *overrides: str):
    return compose([*run_overrides(tmp, shards), f"compress.teacher_ckpt={teacher}", *overrides], tmp)


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("backbone", BACKBONES)
def test_pruning_removes_channels_and_the_network_still_trains(backbone, default_ratio):
    net = copy.deepcopy(random_classifier(backbone).net)
    before = count_ops(net, 32)
    prune_network(net, 32, 14, default_ratio)
    after = count_ops(net, 32)
    assert after["params"] == n_params(net) < before["params"]  # tensors really shrank, not masked
    # the default ratio halves the compute of the default small_cnn (and resnet18); depthwise nets keep a bit more
    assert after["macs"] <= (0.5 if backbone in ("small_cnn", "resnet18") else 0.6) * before["macs"]
    heads = [m for m in net.modules() if isinstance(m, nn.Linear) and m.out_features == 14]
    assert heads, "the classifier head keeps one output per class"
    net.train()
    out = net(torch.randn(4, 3, 32, 32))
    assert out.shape == (4, 14)
    out.logsumexp(1).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


@pytest.mark.parametrize("importance", ["l1", "l2", "group_l1", "bn_scale", "lamp", "fpgm"])
def test_every_importance_criterion_prunes(importance):
    net = copy.deepcopy(random_classifier().net)
    before = n_params(net)
    prune_network(net, 32, 14, 0.3, importance=importance)
    assert n_params(net) < before
    assert net.eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 14)


def test_bad_pruning_settings_are_refused():
    net = random_classifier().net
    with pytest.raises(ValueError, match="unknown pruning importance"):
        prune_network(copy.deepcopy(net), 32, 14, 0.3, importance="nope")
    with pytest.raises(ValueError, match="pruning_ratio"):
        prune_network(copy.deepcopy(net), 32, 14, 1.0)


def test_distillation_loss_matches_its_definition():
    torch.manual_seed(0)
    s, t, y = torch.randn(8, 14), torch.randn(8, 14), torch.randint(0, 14, (8,))
    loss, kd, ce = distillation_loss(s, t, y, temperature=3.0, alpha=0.25)
    p_t = (t / 3).softmax(-1)
    expected_kd = (p_t * (p_t.log() - (s / 3).log_softmax(-1))).sum(-1).mean() * 9
    assert kd == pytest.approx(float(expected_kd), rel=1e-5)
    assert ce == pytest.approx(float(nn.functional.cross_entropy(s, y)), rel=1e-6)
    assert loss == pytest.approx(0.25 * float(kd) + 0.75 * float(ce), rel=1e-6)
    assert float(distillation_loss(t, t, y, 4.0, 1.0)[0]) == pytest.approx(0.0, abs=1e-6)


def test_distillation_loss_is_finite_and_decreasing_on_a_fixed_batch():
    teacher = random_classifier(seed=1).net.eval()
    student = prune_network(copy.deepcopy(teacher), 32, 14, 0.4).train()
    torch.manual_seed(0)
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 14, (16,))
    with torch.no_grad():
        t_logits = teacher(x)
    opt = torch.optim.AdamW(student.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        loss = distillation_loss(student(x), t_logits, y, temperature=4.0, alpha=0.7)[0]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.7 * losses[0]
    assert sum(b < a for a, b in zip(losses, losses[1:], strict=False)) >= 6


def test_distillation_module_freezes_the_teacher_and_keeps_plain_hyperparameters():
    teacher = random_classifier(seed=1)
    student = prune_network(copy.deepcopy(teacher.net), 32, 14, 0.4)
    hp = {k: teacher.hparams[k] for k in ("catalogue", "backbone", "image_size", "mean", "std")}
    module = DistillationModule(teacher=teacher.net, temperature=2.0, alpha=0.5, net=student, **hp)
    module.train()
    assert not module.teacher.training and module.net.training
    assert not any(p.requires_grad for p in module.teacher.parameters())
    assert module.hparams.temperature == 2.0 and module.hparams.alpha == 0.5
    assert not any(isinstance(v, nn.Module) for v in module.hparams.values())
    optimizer = module.configure_optimizers()
    assert sum(p.numel() for g in optimizer.param_groups for p in g["params"]) == n_params(student)


def test_compressed_checkpoint_round_trips_with_weights_only(tmp_path):
    catalogue = load_catalogue().to_dict()
    catalogue["classes"] = catalogue["classes"][::-1]  # a class order of its own must travel with the weights
    model = random_classifier("resnet18", catalogue=catalogue)
    net = prune_network(copy.deepcopy(model.net), 32, 14, 0.4).eval()
    path = save_compressed(tmp_path / "compressed.ckpt", net, dict(model.hparams), {"ratio": 0.4})
    assert [p.name for p in tmp_path.iterdir()] == ["compressed.ckpt"]  # atomic: no temp file left
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert {"state_dict", "hyper_parameters", "pruning"} <= set(raw)

    loaded = load_classifier(path)
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))
    assert not loaded.training
    assert loaded.catalogue.ids == [c["id"] for c in catalogue["classes"]] != load_catalogue().ids
    assert n_params(loaded.net) == n_params(net) < n_params(model.net)
    meta = checkpoint_meta(path)
    assert meta == {
        "catalogue": catalogue,
        "image_size": 32,
        "mean": model.hparams.mean,
        "std": model.hparams.std,
        "backbone": "resnet18",
        "pruned": True,
    }


def test_teacher_checkpoint_loads_through_the_same_loader(trained_teacher):
    model = load_classifier(trained_teacher)
    reference = MushroomClassifier.load_from_checkpoint(trained_teacher, map_location="cpu", weights_only=True).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))
    meta = checkpoint_meta(trained_teacher)
    assert meta["pruned"] is False and meta["image_size"] == 32 and meta["backbone"] == "small_cnn"
    assert [c["id"] for c in meta["catalogue"]["classes"]] == model.catalogue.ids


def test_missing_checkpoint_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.ckpt"):
        load_classifier(tmp_path / "nothing.ckpt")


def test_compress_stage_prunes_distils_and_publishes(tmp_path, tiny_shards, trained_teacher):
    cfg = stage_cfg(tmp_path, tiny_shards, trained_teacher, "debug=limit", "compress.max_epochs=2")
    report = compress(cfg)
    assert report["epochs"] == 2 and report["best_epoch_restored"]
    assert report["flops_ratio"] <= 0.5 and report["params_ratio"] < 0.6
    assert report["student"]["params"] < report["teacher"]["params"]
    for who in ("teacher", "student"):
        assert {"val/accuracy", "test/accuracy", "test/macro_f1", "test/unsafe_edible_rate"} <= set(report[who])
    assert json.loads((tmp_path / "reports" / "compress.json").read_text()) == report
    student = load_classifier(tmp_path / "models" / "compressed.ckpt")
    assert student.catalogue.ids == load_classifier(trained_teacher).catalogue.ids
    assert n_params(student) == report["student"]["params"]


@pytest.mark.parametrize("cache_max_gb", [4.0, 0.0])  # in memory; streamed (uint8 batches normalized on transfer)
def test_compress_stage_distils_a_resnet18(tmp_path, tiny_shards, cache_max_gb):
    teacher = save_teacher(random_classifier("resnet18"), tmp_path / "teacher" / "best.ckpt")
    report = compress(stage_cfg(tmp_path, tiny_shards, teacher, "debug=fdr", f"data.cache_max_gb={cache_max_gb}"))
    assert report["flops_ratio"] <= 0.5
    assert checkpoint_meta(tmp_path / "models" / "compressed.ckpt")["backbone"] == "resnet18"


def test_compress_script_runs_end_to_end(tmp_path, tiny_shards, trained_teacher):
    proc = run_script(
        "compress.py", "debug=fdr", *run_overrides(tmp_path, tiny_shards), f"compress.teacher_ckpt={trained_teacher}"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "logs" / "compress").is_dir()  # its own task name, not train's
    report = json.loads((tmp_path / "reports" / "compress.json").read_text())
    assert report["params_ratio"] < 1.0
    model = load_classifier(tmp_path / "models" / "compressed.ckpt")
    assert model.catalogue.ids == [c["id"] for c in checkpoint_meta(trained_teacher)["catalogue"]["classes"]]


def test_missing_teacher_is_one_clear_line(tmp_path):
    missing = tmp_path / "models" / "best.ckpt"
    proc = run_script("compress.py", f"paths.models_dir={tmp_path / 'models'}", f"paths.log_dir={tmp_path}")
    assert proc.returncode == 2
    assert last_line(proc.stderr) == (
        f"error: no teacher checkpoint at {missing}: train one first with `python scripts/train.py`"
    )


@pytest.mark.slow
def test_ddp_compress_on_two_cpu_processes(tmp_path, tiny_shards, trained_teacher):
    run_dir = tmp_path / "run"
    proc = run_script(
        "compress.py",
        "trainer=ddp",
        "trainer.devices=2",
        "compress.max_epochs=2",
        *run_overrides(tmp_path, tiny_shards),
        f"compress.teacher_ckpt={trained_teacher}",
        f"hydra.run.dir={run_dir}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(list(run_dir.rglob("metrics.csv"))) == 1
    report = json.loads((tmp_path / "reports" / "compress.json").read_text())
    assert report["epochs"] == 2
    assert load_classifier(tmp_path / "models" / "compressed.ckpt").catalogue.num_classes == 14
