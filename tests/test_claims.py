"""The claim queue and review log (mycolens.monitoring.claims) and the review CLI (scripts/review.py)."""

from __future__ import annotations

import io
import json
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mycolens.monitoring import claims
from mycolens.monitoring.claims import ClaimError
from tests.conftest import last_line, run_script

T0 = datetime(2025, 5, 1, 12, 0, 0, tzinfo=UTC)


def jpeg(seed: int, size: tuple[int, int] = (48, 32)) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB").save(buf, "JPEG")
    return buf.getvalue()


def answer(species: str = "boletus_edulis", verdict: str = "edible", abstained: bool = False) -> dict:
    return {
        "species": species,
        "common_name": "x",
        "edibility": "edible",
        "verdict": verdict,
        "confidence": 0.9,
        "poisonous_probability": 0.05,
        "abstained": abstained,
        "abstain_reason": "ood" if abstained else None,
        "top_k": [{"species": species, "probability": 0.9, "edibility": "edible"}],
        "lookalikes": [],
        "model": {"name": "mycolens", "version": "v7", "variant": "int8"},
    }


def add(queue: Path, seed: int, species: str = "boletus_edulis", minutes: int = 0, **kw) -> claims.Claim:
    return claims.add_claim(
        queue, species, jpeg(seed), answer=kw.pop("answer", answer()), now=T0 + timedelta(minutes=minutes), **kw
    )


def test_a_claim_is_stored_whole_with_its_provenance(tmp_path):
    c = add(tmp_path, 1, client="abcd")
    assert c.folder == tmp_path / "claims" / c.id and c.id.startswith("20250501T120000Z-")
    assert sorted(p.name for p in c.folder.iterdir()) == ["claim.json", "photo.jpg"]
    d = json.loads((c.folder / "claim.json").read_text())
    assert d["created"] == "2025-05-01T12:00:00.000Z" and d["species"] == "boletus_edulis"
    assert d["model"] == {"name": "mycolens", "version": "v7", "variant": "int8"}
    assert d["answer"]["verdict"] == "edible" and d["answer"]["top_k"][0]["species"] == "boletus_edulis"
    assert "lookalikes" not in d["answer"] and d["model_abstained"] is False and d["client"] == "abcd"
    assert c.read_photo() == jpeg(1)
    [state] = claims.claim_states(tmp_path)
    assert state.status == "pending" and state.claim == c


def test_abstained_answer_is_flagged(tmp_path):
    c = add(tmp_path, 2, answer=answer(verdict="uncertain", abstained=True))
    assert c.model_abstained and claims.get_claim(tmp_path, c.id).model_abstained


def test_duplicate_photo_is_refused_with_409(tmp_path):
    first = add(tmp_path, 3)
    for species, minutes in (("boletus_edulis", 5), ("amanita_phalloides", 0)):  # later, or the very same second
        with pytest.raises(ClaimError) as info:
            add(tmp_path, 3, species=species, minutes=minutes)
        assert (info.value.status, info.value.code) == (409, "duplicate_claim") and first.id in str(info.value)
    assert claims.count_claims(tmp_path) == 1


def test_full_queue_refuses_with_507(tmp_path):
    add(tmp_path, 4, max_claims=2)
    add(tmp_path, 5, max_claims=2, minutes=1)
    with pytest.raises(ClaimError) as info:
        add(tmp_path, 6, max_claims=2, minutes=2)
    assert (info.value.status, info.value.code) == (507, "queue_full")
    assert claims.count_claims(tmp_path) == 2


def test_leftover_temp_folder_is_ignored_and_swept(tmp_path):
    """A crash mid-write leaves only a dot-named temp folder: no reader sees a half claim."""
    c = add(tmp_path, 7)
    half = tmp_path / "claims" / f".{c.id[:-1]}0.abc.tmp"
    half.mkdir()
    (half / "photo.jpg").write_bytes(b"half")
    assert [s.claim.id for s in claims.claim_states(tmp_path)] == [c.id]
    assert claims.count_claims(tmp_path) == 1 and claims.find_duplicate(tmp_path, "0" * 64) is None
    os.utime(half, (0, 0))  # old: the next claim removes it
    add(tmp_path, 8, minutes=1)
    assert not half.exists() and claims.count_claims(tmp_path) == 2


def test_unreadable_claim_folder_is_skipped(tmp_path):
    add(tmp_path, 9)
    broken = tmp_path / "claims" / "20250101T000000Z-0123456789ab"
    broken.mkdir()
    (broken / "claim.json").write_text("{not json")
    assert len(claims.read_claims(tmp_path)) == 1
    with pytest.raises(ClaimError) as info:
        claims.get_claim(tmp_path, broken.name)
    assert info.value.status == 404


def test_client_hash_is_salted_and_the_salt_file_private(tmp_path):
    h = claims.client_hash(tmp_path, "203.0.113.9")
    salt = tmp_path / ".client-salt"
    assert stat.S_IMODE(salt.stat().st_mode) == 0o600 and len(salt.read_bytes()) == 64
    assert h == claims.client_hash(tmp_path, "203.0.113.9") != claims.client_hash(tmp_path, "203.0.113.10")
    assert "203.0.113.9" not in h and len(h) == 16
    assert claims.client_hash(tmp_path, "203.0.113.9", salt="env-salt") != h  # a configured salt wins
    assert [p.name for p in tmp_path.iterdir()] == [".client-salt"]  # no temp file left


def test_decisions_are_appended_and_status_derived(tmp_path):
    c = add(tmp_path, 10)
    st = claims.decide(tmp_path, c.id, "approve", "alice", note="cap and pores match", now=T0)
    assert st.status == "approved" and st.approved_by == ("alice",)
    lines = claims.decisions_path(tmp_path).read_text().splitlines()
    assert json.loads(lines[0]) == {
        "time": "2025-05-01T12:00:00.000Z",
        "claim": c.id,
        "decision": "approve",
        "reviewer": "alice",
        "note": "cap and pores match",
        "via": "cli",
    }
    st = claims.decide(tmp_path, c.id, "reject", "bob", via="http", token="ab12cd34")
    assert st.status == "rejected" and st.rejected_by == ("bob",)  # any reject rejects
    st = claims.decide(tmp_path, c.id, "approve", "BOB")  # a reviewer's latest decision counts (names fold case)
    assert st.status == "approved" and len(claims.decisions_path(tmp_path).read_text().splitlines()) == 3
    assert [s.claim.id for s in claims.approved_claims(tmp_path)] == [c.id]


def test_two_distinct_reviewers_required(tmp_path):
    c = add(tmp_path, 11)
    assert claims.decide(tmp_path, c.id, "approve", "alice", reviewers_required=2).status == "pending"
    assert claims.decide(tmp_path, c.id, "approve", "Alice", reviewers_required=2).status == "pending"  # same one
    assert claims.approved_claims(tmp_path, 2) == [] and len(claims.approved_claims(tmp_path, 1)) == 1
    st = claims.decide(tmp_path, c.id, "approve", "bob", reviewers_required=2)
    assert st.status == "approved" and set(st.approved_by) == {"Alice", "bob"}


@pytest.mark.parametrize(
    ("claim_id", "decision", "reviewer", "note", "status", "code"),
    [
        ("20990101T000000Z-0123456789ab", "approve", "alice", "", 404, "unknown_claim"),
        ("../../etc/passwd", "approve", "alice", "", 404, "unknown_claim"),
        (None, "maybe", "alice", "", 422, "bad_decision"),
        (None, "approve", "", "", 422, "bad_reviewer"),
        (None, "approve", "al ice\n", "", 422, "bad_reviewer"),
        (None, "approve", "alice", "x" * 3000, 422, "bad_note"),
    ],
)
def test_bad_decisions_are_refused_and_not_logged(tmp_path, claim_id, decision, reviewer, note, status, code):
    c = add(tmp_path, 12)
    with pytest.raises(ClaimError) as info:
        claims.decide(tmp_path, claim_id or c.id, decision, reviewer, note=note)
    assert (info.value.status, info.value.code) == (status, code)
    assert not claims.decisions_path(tmp_path).exists()


def test_a_line_cut_by_a_crash_loses_no_later_decision(tmp_path):
    a, b = add(tmp_path, 13), add(tmp_path, 14, minutes=1)
    claims.decide(tmp_path, a.id, "approve", "alice")
    with open(claims.decisions_path(tmp_path), "ab") as f:
        f.write(b'{"claim": "' + b.id.encode() + b'", "decis')  # the process died mid-write
    claims.decide(tmp_path, b.id, "reject", "alice")
    assert {s.claim.id: s.status for s in claims.claim_states(tmp_path)} == {a.id: "approved", b.id: "rejected"}


def test_export_writes_the_ingest_layout_and_a_manifest(tmp_path):
    ok, pending, rejected = add(tmp_path, 15), add(tmp_path, 16, minutes=1), add(tmp_path, 17, "amanita_phalloides", 2)
    claims.decide(tmp_path, ok.id, "approve", "alice")
    claims.decide(tmp_path, rejected.id, "reject", "alice")
    out = tmp_path / "export"
    manifest = claims.export_approved(tmp_path, out)
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == [
        f"boletus_edulis/{ok.sha256}.jpg",
        "manifest.json",
    ]
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert [(e["claim_id"], e["sha256"], e["approved_by"]) for e in manifest["claims"]] == [
        (ok.id, ok.sha256, ["alice"])
    ]
    assert pending.id not in json.dumps(manifest)


def test_a_changed_photo_is_not_exported(tmp_path):
    c = add(tmp_path, 18)
    claims.decide(tmp_path, c.id, "approve", "alice")
    c.photo.write_bytes(jpeg(99))
    with pytest.raises(ClaimError) as info:
        claims.export_approved(tmp_path, tmp_path / "export")
    assert info.value.code == "photo_changed" and not (tmp_path / "export").exists()


def test_mark_used_logs_then_archives_and_is_repeatable(tmp_path):
    a, b = add(tmp_path, 19), add(tmp_path, 20, minutes=1)
    claims.decide(tmp_path, a.id, "approve", "alice")
    assert claims.mark_used(tmp_path, [a.id], tmp_path / "used") == 1
    assert (tmp_path / "used" / a.id / "photo.jpg").is_file() and claims.count_claims(tmp_path) == 1
    assert [d.decision for d in claims.read_decisions(tmp_path)[a.id]] == ["approve", "used"]
    assert claims.mark_used(tmp_path, [a.id], tmp_path / "used") == 0  # already gone from the queue
    # a crash between the log line and the move: the claim is used (no decisions), the next call moves it
    claims.decide(tmp_path, b.id, "approve", "alice")
    claims.append_decision(tmp_path, claims.Decision(b.id, "used", "retrain", "t", via="retrain"))
    assert claims.claim_state(tmp_path, b.id).status == "used" and claims.approved_claims(tmp_path) == []
    with pytest.raises(ClaimError) as info:
        claims.decide(tmp_path, b.id, "approve", "bob")
    assert info.value.status == 409 and info.value.code == "claim_used"
    assert claims.mark_used(tmp_path, [b.id], tmp_path / "used") == 1
    assert [d.decision for d in claims.read_decisions(tmp_path)[b.id]].count("used") == 1


def test_purge_removes_only_rejected_claims(tmp_path):
    a, b = add(tmp_path, 21), add(tmp_path, 22, minutes=1)
    claims.decide(tmp_path, a.id, "reject", "alice")
    assert claims.purge_rejected(tmp_path) == [a.id]
    assert [c.id for c in claims.read_claims(tmp_path)] == [b.id]
    assert claims.read_decisions(tmp_path)[a.id][0].decision == "reject"  # the log keeps it


# ------------------------------------------------------------------ scripts/review.py


def review(queue: Path, *args: str):
    return run_script("review.py", f"monitoring.feedback.dir={queue}", f"paths.log_dir={queue.parent / 'logs'}", *args)


def test_review_cli_lists_approves_rejects_and_exports(tmp_path):
    queue = tmp_path / "feedback"
    a = add(queue, 30)
    b = add(queue, 31, "amanita_phalloides", minutes=1, answer=answer(verdict="uncertain", abstained=True))

    r = review(queue)
    assert r.returncode == 0, r.stderr
    assert a.id in r.stdout and b.id in r.stdout and "model_abstained" in r.stdout

    r = review(queue, "action=approve", f"claim={a.id}", "reviewer=alice", "note=pores and stem fit")
    assert r.returncode == 0, r.stderr
    assert last_line(r.stdout) == f"{a.id}: approved by alice; status approved (1/1 approvals, 0 rejections)"
    r = review(queue, "action=reject", f"claim={b.id}", "reviewer=alice")
    assert r.returncode == 0, r.stderr

    r = review(queue, "action=list", "status=all", "format=json")
    assert r.returncode == 0, r.stderr
    assert {c["claim_id"]: c["status"] for c in json.loads(r.stdout)} == {a.id: "approved", b.id: "rejected"}
    [logged] = [d for d in claims.read_decisions(queue)[a.id]]
    assert (logged.reviewer, logged.note, logged.via) == ("alice", "pores and stem fit", "cli")

    r = review(queue, "action=export", f"out={tmp_path / 'approved'}")
    assert r.returncode == 0, r.stderr
    manifest = json.loads((tmp_path / "approved" / "manifest.json").read_text())
    assert [(c["claim_id"], c["sha256"]) for c in manifest["claims"]] == [(a.id, a.sha256)]
    assert (tmp_path / "approved" / "boletus_edulis" / f"{a.sha256}.jpg").read_bytes() == a.read_photo()


def test_review_cli_refusals_are_one_line_errors(tmp_path):
    queue = tmp_path / "feedback"
    a = add(queue, 32)
    for args, expected in [
        (("action=approve", f"claim={a.id}"), "give your name"),
        (("action=approve", "reviewer=alice"), "give the claim"),
        (("action=approve", "claim=20990101T000000Z-0123456789ab", "reviewer=alice"), "unknown_claim"),
        (("action=export",), "give the folder"),
        (("action=delete",), "action=delete"),
    ]:
        r = review(queue, *args)
        assert r.returncode == 2 and expected in last_line(r.stderr), (args, r.stderr)
    assert not claims.decisions_path(queue).exists()
