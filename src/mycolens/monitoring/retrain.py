"""Retraining on feedback: the current shards plus the feedback photos as one ingest folder, and the gated promotion.

`make retrain` (scripts/retrain.py, conf/retrain.yaml) runs `run_retrain`: prepare -> ingest -> archive -> train ->
compress -> export -> evaluate -> promote. Single steps: `python -m mycolens.monitoring.retrain prepare|archive|promote`.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mycolens.data.shards import read_manifest, read_split
from mycolens.inference.onnx_model import VARIANTS, ModelRefused, verify_model_dir
from mycolens.monitoring.claims import approved_claims, mark_used
from mycolens.monitoring.promotion import GateLimits, freeze_eval_set, frozen_photo_hashes, gate_candidate
from mycolens.utils.io import atomic_dir

CSV_NAME = "labels.csv"
USED_NAME = "feedback_files.json"


def prepare_retrain_source(
    shards_dir: str | Path,
    feedback_dir: str | Path,
    out_dir: str | Path,
    reviewers_required: int = 1,
    exclude: Collection[str] = (),
) -> dict[str, Any]:
    """Write out_dir/{data,feedback,ood}/ and labels.csv (path,label,observation); observations keep their ids.

    Feedback means the APPROVED claims of the queue in `feedback_dir` (mycolens.monitoring.claims, approved by
    `reviewers_required` distinct reviewers, rejected by none, not used yet); pending and rejected claims never
    enter. Each becomes feedback/<species>/<sha256>.jpg with observation `feedback/<claim id>`, its photo checked
    against the hash recorded at claim time; feedback_files.json lists the claim ids and hashes used. Labelled
    photos whose sha256 is in `exclude` (the frozen evaluation set) are left out, so no candidate trains on them.
    """
    read_manifest(shards_dir)  # a clear error when there are no shards
    feedback_dir = Path(feedback_dir)
    rows: list[tuple[str, str, str]] = []
    used: list[dict[str, Any]] = []
    counts = {"data": 0, "ood": 0, "feedback": 0, "left_out": 0}
    exclude = set(exclude)
    approved = approved_claims(feedback_dir, reviewers_required)
    with atomic_dir(out_dir) as tmp:
        (tmp / "ood").mkdir()
        for split in ("train", "val", "test", "ood"):
            table = read_split(shards_dir, split, columns=["image", "species", "specimen", "sha256"]).to_pylist()
            for r in table:
                if split == "ood":
                    _write(tmp / "ood" / f"{r['sha256']}.jpg", r["image"])
                    counts["ood"] += 1
                    continue
                if r["sha256"] in exclude:
                    counts["left_out"] += 1
                    continue
                rel = f"data/{r['species']}/{r['sha256']}.jpg"
                _write(tmp / rel, r["image"])
                rows.append((rel, r["species"], r["specimen"]))
                counts["data"] += 1
        seen: set[str] = set()
        for state in approved:
            claim = state.claim
            if claim.sha256 in seen or claim.sha256 in exclude:  # the queue refuses duplicates; a race could leave two
                continue
            seen.add(claim.sha256)
            rel = f"feedback/{claim.species}/{claim.sha256}.jpg"
            _write(tmp / rel, claim.read_photo())
            rows.append((rel, claim.species, f"feedback/{claim.id}"))  # stable id: one claim, one split
            used.append(
                {
                    "claim_id": claim.id,
                    "sha256": claim.sha256,
                    "species": claim.species,
                    "path": rel,
                    "approved_by": list(state.approved_by),
                }
            )
            counts["feedback"] += 1
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["path", "label", "observation"])
        writer.writerows(sorted(rows))
        (tmp / CSV_NAME).write_text(buf.getvalue())
        record = {"feedback_dir": str(feedback_dir), "reviewers_required": int(reviewers_required), "claims": used}
        (tmp / USED_NAME).write_text(json.dumps(record, indent=2) + "\n")
    return {**counts, "csv": str(Path(out_dir) / CSV_NAME), "claims": [u["claim_id"] for u in used]}


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def archive_feedback(out_dir: str | Path, archive_dir: str | Path) -> int:
    """Mark the claims the last prepared source used as `used` (decisions.jsonl) and move them to archive_dir/<id>.

    Claims approved later stay in the queue. Crash-safe and repeatable (mycolens.monitoring.claims.mark_used).
    """
    info = json.loads((Path(out_dir) / USED_NAME).read_text())
    return mark_used(info["feedback_dir"], [c["claim_id"] for c in info.get("claims", [])], archive_dir)


def promote_model(candidate: str | Path, target: str | Path, variants: tuple[str, ...] = VARIANTS) -> Path:
    """Replace `target` by `candidate` only if every variant passes the hash and safety-gate checks (ModelRefused if not).

    The replaced folder is kept as `<target>.previous`.
    """
    candidate, target = Path(candidate), Path(target)
    for variant in variants:
        verify_model_dir(candidate, variant)
    previous = target.with_name(target.name + ".previous")
    if previous.exists():
        shutil.rmtree(previous)
    if target.exists():
        os.replace(target, previous)
    os.replace(candidate, target)
    return target


@dataclass(frozen=True)
class RetrainPaths:
    """conf/retrain.yaml's `retrain` section: where each step reads and writes."""

    feedback_dir: Path
    source_shards: Path
    work_dir: Path
    archive_dir: Path
    shards_dir: Path
    models_dir: Path
    reports_dir: Path
    candidate_dir: Path
    target_dir: Path
    frozen_dir: Path

    @classmethod
    def from_config(cls, section: dict[str, Any]) -> RetrainPaths:
        return cls(**{f: Path(section[f]) for f in cls.__dataclass_fields__})


def run_retrain(
    paths: RetrainPaths,
    scripts_dir: str | Path,
    gate: GateLimits,
    variant: str,
    reviewers_required: int,
    overrides: Sequence[str] = (),
    python: str = sys.executable,
    say: Callable[[str], None] = print,
) -> Path:
    """Build a candidate from the shards plus the approved claims with the stage scripts, gate it against the served
    model on the frozen set, promote it, then archive the claims it used (ModelRefused / PromotionRefused if refused:
    the served model stays, and the claims stay in the queue for a reviewer to look at again).

    `overrides` (Hydra `key=value`) reach every stage; a failed stage raises CalledProcessError and nothing is promoted.
    """
    own = [f"paths.shards_dir={paths.shards_dir}", f"paths.models_dir={paths.models_dir}"]
    own.append(f"paths.reports_dir={paths.reports_dir}")

    def stage(script: str, *args: str) -> None:
        say(f"[retrain] {script} {' '.join(args)}")  # the candidate's own locations win over the caller's overrides
        subprocess.run([python, str(Path(scripts_dir) / script), *overrides, *own, *args], check=True)

    frozen = freeze_eval_set(paths.source_shards, paths.frozen_dir)
    say(f"[retrain] frozen evaluation set {frozen['sha256'][:12]}: {frozen['images']} photos ({paths.frozen_dir})")
    counts = prepare_retrain_source(
        paths.source_shards,
        paths.feedback_dir,
        paths.work_dir,
        reviewers_required,
        exclude=frozen_photo_hashes(paths.frozen_dir),
    )
    say(
        f"[retrain] source: {counts['data']} photos from the shards ({counts['left_out']} frozen ones left out), "
        f"{counts['feedback']} approved claims, {counts['ood']} ood"
    )
    if counts["feedback"] == 0:
        say("[retrain] note: no approved claims yet; retraining on the current data only")
    ood_source = paths.work_dir / "ood"
    stage("ingest.py", f"source={paths.work_dir}", f"data.csv={CSV_NAME}", f"data.ingest.ood_source={ood_source}")
    stage("train.py")
    stage("compress.py")
    shutil.rmtree(paths.candidate_dir, ignore_errors=True)
    stage("export.py", f"paths.export_dir={paths.candidate_dir}")
    stage("evaluate.py", f"paths.export_dir={paths.candidate_dir}")
    claims = json.loads((paths.work_dir / USED_NAME).read_text())["claims"]
    report = gate_candidate(paths.candidate_dir, paths.target_dir, frozen, variant, gate, {"claims": claims})
    moved = ", ".join(report.get("moved", [])) or "none"
    say(f"[retrain] promotion gate passed against {report['compared_with']} (species that moved: {moved})")
    promoted = promote_model(paths.candidate_dir, paths.target_dir)
    say(f"[retrain] promoted {paths.candidate_dir} -> {promoted} (previous kept beside it)")
    say(f"[retrain] archived {archive_feedback(paths.work_dir, paths.archive_dir)} claims to {paths.archive_dir}")
    return promoted


def main(argv: list[str] | None = None) -> int:
    """Command line for the Makefile's retrain target: prepare | archive | promote."""
    parser = argparse.ArgumentParser(prog="python -m mycolens.monitoring.retrain", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="shards + feedback -> one ingest folder with labels.csv")
    p.add_argument("--shards", required=True)
    p.add_argument("--feedback", required=True)
    p.add_argument("--out", required=True)
    a = sub.add_parser("archive", help="move the feedback photos used by the last prepare out of the feedback folder")
    a.add_argument("--out", required=True)
    a.add_argument("--to", required=True)
    m = sub.add_parser("promote", help="replace the served model folder if the candidate passes the safety gate")
    m.add_argument("--candidate", required=True)
    m.add_argument("--target", required=True)
    args = parser.parse_args(argv)
    try:
        if args.cmd == "prepare":
            counts = prepare_retrain_source(args.shards, args.feedback, args.out)
            print(
                f"retrain source: {counts['data']} photos from the shards, {counts['feedback']} from feedback, "
                f"{counts['ood']} ood; ingest with source={args.out} data.csv={CSV_NAME}"
            )
            if counts["feedback"] == 0:
                print("note: no feedback photos yet; retraining on the current data only")
        elif args.cmd == "archive":
            print(f"archived {archive_feedback(args.out, args.to)} feedback photos to {args.to}")
        else:
            print(
                f"promoted {args.candidate} -> {promote_model(args.candidate, args.target)} (previous kept beside it)"
            )
    except ModelRefused as exc:
        print(f"error: the candidate model is refused, the served model stays: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
