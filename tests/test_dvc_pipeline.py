"""The DVC pipeline on a tiny config, in a copy of the project in a temp git repo (real DVC, real stages)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

BIN = Path(sys.executable).parent
OUTS = [
    "data/shards",
    "data/ood_sets",
    "models/best.ckpt",
    "models/compressed.ckpt",
    "models/export/model.onnx",
    "models/export/model.int8.onnx",
    "models/export/model.json",
]

pytestmark = pytest.mark.slow


def clean_env() -> dict[str, str]:
    """No MYCOLENS_ROOT: stages must resolve paths inside the copy, as DVC composes them."""
    env = {k: v for k, v in os.environ.items() if k != "MYCOLENS_ROOT"}
    env.update(PATH=f"{BIN}:{env['PATH']}", DVC_NO_ANALYTICS="1", RAY_USAGE_STATS_ENABLED="0", GIT_TERMINAL_PROMPT="0")
    return env


def sh(repo: Path, *cmd: str, check: bool = True) -> str:
    proc = subprocess.run(cmd, cwd=repo, env=clean_env(), capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    return proc.stdout + proc.stderr


def tree_hash(path: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")) if path.is_dir() else [path]:
        if p.is_file():
            h.update(p.relative_to(path.parent).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def ran(log: str) -> set[str]:
    return {line.split("'")[1] for line in log.splitlines() if line.startswith("Running stage '")}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's tracked files in a new git repo, the tiny experiment as the default, one `dvc repro` done."""
    repo = tmp_path_factory.mktemp("dvcrepo") / "mycolens"
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for rel in files:
        if (ROOT / rel).is_file():
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, repo / rel)
    config = repo / "conf/config.yaml"
    config.write_text(config.read_text().replace("  - experiment: null", "  - experiment: tiny"))
    (repo / "params.yaml").unlink(missing_ok=True)
    sh(repo, "git", "init", "-q")
    sh(repo, "git", "config", "user.email", "ci@example.invalid")
    sh(repo, "git", "config", "user.name", "ci")
    sh(repo, "dvc", "remote", "add", "-d", "-f", "local", str(repo.parent / "remote"))
    sh(repo, "python", "scripts/params.py")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "init")
    log = sh(repo, "dvc", "repro")
    assert ran(log) >= {"data", "ood_sets", "train", "compress", "export", "evaluate"}, log
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "repro")
    # reports/ holds uncached metrics that later tests (exp run) overwrite: keep the first run's for comparison
    shutil.copytree(repo / "reports", repo.parent / "first_reports", ignore=shutil.ignore_patterns("dvclive", "*.png"))
    return repo


def test_every_out_exists_and_the_pipeline_is_clean(repo):
    for out in OUTS:
        assert (repo / out).exists(), out
    assert "up to date" in sh(repo, "dvc", "status")
    assert ran(sh(repo, "dvc", "repro")) == set()  # a second repro runs no stage


def test_metrics_and_params_show_the_expected_keys(repo):
    metrics = sh(repo, "dvc", "metrics", "show")
    for key in ("accuracy", "unsafe_edible_rate", "ood_abstain_rate"):
        assert key in metrics
    assert "params.yaml" in sh(repo, "dvc", "params", "diff", "--all")


def test_conf_edit_reruns_only_the_stages_that_read_it_on_plain_repro(repo):
    """An edit in conf/ reaches params.yaml through the params stage, and plain `dvc repro` reruns the stages that
    list the edited key and nothing upstream of them (a training key reruns train and every stage after it: the
    exp run test below)."""
    path = repo / "conf/evaluate/default.yaml"
    original = path.read_text()
    path.write_text(original.replace("batch_size: 64", "batch_size: 32"))
    try:
        stages = ran(sh(repo, "dvc", "repro"))
        assert stages == {"params", "evaluate"}, stages
        assert yaml.safe_load((repo / "params.yaml").read_text())["evaluate"]["batch_size"] == 32
    finally:
        path.write_text(original)
        sh(repo, "dvc", "repro")  # back in step with the committed state (from DVC's run cache)
        sh(repo, "git", "add", "-A")
        sh(repo, "git", "commit", "-qm", "restore", check=False)


def test_exp_run_with_a_train_param_reruns_train_and_later_stages_only(repo):
    log = sh(repo, "dvc", "exp", "run", "-S", "model.optimizer.lr=0.01")
    stages = ran(log)
    assert {"train", "compress", "export", "evaluate"} <= stages and "data" not in stages, log
    assert yaml.safe_load((repo / "params.yaml").read_text())["model"]["optimizer"]["lr"] == 0.01
    assert "model.optimizer.lr" in sh(repo, "dvc", "params", "diff")
    assert "test/accuracy" in sh(repo, "dvc", "metrics", "diff")  # the metrics files are in git, beside dvc.lock
    # every revision's metrics can be compared: the baseline commit and the experiment both have numbers
    proc = subprocess.run(["dvc", "exp", "show", "--json"], cwd=repo, env=clean_env(), capture_output=True, text=True)
    baseline = next(row for row in json.loads(proc.stdout) if row["rev"] != "workspace")
    (experiment,) = [rev for exp in baseline["experiments"] for rev in exp["revs"]]
    for row in (baseline, experiment):
        train = row["data"]["metrics"]["reports/train.json"]
        assert "data" in train and isinstance(train["data"]["test/accuracy"], float), (row["name"], train)
    sh(repo, "git", "checkout", "--", "params.yaml", "dvc.lock", "reports")
    sh(repo, "dvc", "checkout", "--force")


def test_push_delete_pull_restores_identical_files(repo):
    before = {out: tree_hash(repo / out) for out in OUTS}
    sh(repo, "dvc", "push")
    for out in OUTS:
        p = repo / out
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    shutil.rmtree(repo / ".dvc" / "cache")
    sh(repo, "dvc", "pull")
    assert {out: tree_hash(repo / out) for out in OUTS} == before


def without_timings(obj: object) -> object:
    """The report minus wall-clock figures (latency, fit seconds), which no seed fixes."""
    if isinstance(obj, dict):
        return {
            k: without_timings(v) for k, v in obj.items() if not (k.startswith("latency_ms") or k.endswith("_seconds"))
        }
    return obj


def test_from_scratch_again_gives_identical_outputs_and_metrics(repo):
    first = repo.parent / "first_reports"
    sh(repo, "git", "checkout", "--", "params.yaml", "dvc.lock")
    sh(repo, "dvc", "checkout", "--force")
    before = {out: tree_hash(repo / out) for out in OUTS}
    sh(repo, "dvc", "repro", "--force")
    assert {out: tree_hash(repo / out) for out in OUTS} == before  # shards, checkpoints, ONNX files, model.json
    for name in ("data.json", "train.json", "compress.json", "metrics.json"):
        again = json.loads((repo / "reports" / name).read_text())
        assert without_timings(again) == without_timings(json.loads((first / name).read_text())), name
    assert "up to date" in sh(repo, "dvc", "status")


def test_missing_input_fails_the_stage_clearly_and_the_cache_keeps_the_outputs(repo):
    shards = tree_hash(repo / "data/shards")
    config = repo / "conf/config.yaml"
    original = config.read_text()
    config.write_text(original.replace("catalogue: ${paths.root_dir}/src", "catalogue: ${paths.root_dir}/nowhere"))
    try:
        proc = subprocess.run(
            [str(BIN / "dvc"), "repro"],
            cwd=repo,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode != 0
        assert "error: catalogue file not found" in proc.stdout + proc.stderr
    finally:
        config.write_text(original)
    sh(repo, "python", "scripts/params.py")
    sh(repo, "dvc", "checkout", "--force")
    assert tree_hash(repo / "data/shards") == shards  # the cached outs survived the failed run
