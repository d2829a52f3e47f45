"""The feedback claim queue and its review log: nothing a user sends trains a model before reviewers approve it.

Layout under the queue folder (`monitoring.feedback.dir`):

    claims/<claim id>/photo.jpg      the photo, re-encoded without metadata (mycolens.monitoring.feedback)
    claims/<claim id>/claim.json     provenance: time, claimed species, photo hash, salted client hash, the
                                     served model's version and its own answer (verdict, species, top-k, abstention)
    decisions.jsonl                  append-only review log, one JSON object a line
    .client-salt                     random salt for client hashes (0600), made once when no salt is configured

A claim is written into a temp folder (a dot name, ignored by every reader) and renamed into place, so a crash
leaves a whole claim or none. The queue plus the log are the source of truth: a claim's status is derived from
the log every time, never stored.

Status rule: each reviewer's latest approve/reject on a claim counts. A claim is `rejected` as soon as any
reviewer's latest decision is reject, `approved` once `reviewers_required` distinct reviewers (names compared
case-insensitively) approve and none rejects, `pending` otherwise, and `used` once a retrain took it (a `used`
line in the log; its folder then moves to the retrain's archive). Used claims take no more decisions.

Duplicates (the same cleaned photo, by SHA-256, already in the queue) are refused with 409 `duplicate_claim`,
naming the claim that holds it; a full queue (`max_claims` claims of any status still in the queue) refuses new
claims with 507 `queue_full` until a retrain archives the approved ones or `purge_rejected` removes rejected ones.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mycolens.inference.onnx_model import ANSWER_FIELDS
from mycolens.monitoring.feedback import FeedbackError
from mycolens.utils.io import atomic_dir

log = logging.getLogger(__name__)

CLAIMS = "claims"
DECISIONS = "decisions.jsonl"
SALT = ".client-salt"
PHOTO = "photo.jpg"
CLAIM_JSON = "claim.json"
MANIFEST = "manifest.json"
VERDICTS = ("approve", "reject")
USED = "used"
STATUSES = ("pending", "approved", "rejected", "used")
TEMP_MAX_AGE_S = 3600  # leftover temp folders (a crash mid-write) older than this are removed by the next claim
CLAIM_ID = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{12}$")
REVIEWER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
MAX_NOTE = 2000


class ClaimError(FeedbackError):
    """A refused claim or decision; `code` and `status` give the JSON error and the HTTP status."""


def utc_now(now: datetime | None = None) -> str:
    """UTC ISO time with milliseconds and a Z."""
    return (now or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ------------------------------------------------------------------ claims


@dataclass(frozen=True)
class Claim:
    """One stored claim (its folder and claim.json)."""

    id: str
    species: str
    sha256: str
    created: str
    folder: Path
    client: str = ""
    model: dict[str, Any] | None = None
    answer: dict[str, Any] | None = None
    model_abstained: bool = False

    @property
    def photo(self) -> Path:
        return self.folder / PHOTO

    def to_dict(self) -> dict[str, Any]:
        return {
            "claim_id": self.id,
            "created": self.created,
            "species": self.species,
            "photo_sha256": self.sha256,
            "client": self.client,
            "model": self.model,
            "answer": self.answer,
            "model_abstained": self.model_abstained,
        }

    @classmethod
    def read(cls, folder: Path) -> Claim:
        d = json.loads((folder / CLAIM_JSON).read_text())
        return cls(
            id=d["claim_id"],
            species=d["species"],
            sha256=d["photo_sha256"],
            created=d["created"],
            folder=folder,
            client=d.get("client", ""),
            model=d.get("model"),
            answer=d.get("answer"),
            model_abstained=bool(d.get("model_abstained")),
        )

    def read_photo(self) -> bytes:
        """The photo's bytes, checked against the hash recorded when it was claimed (ClaimError 409 if changed)."""
        data = self.photo.read_bytes()
        if hashlib.sha256(data).hexdigest() != self.sha256:
            raise ClaimError("photo_changed", f"claim {self.id}: photo.jpg no longer matches its recorded hash", 409)
        return data


def model_answer(answer: Mapping[str, Any] | None) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(model {name, version, variant}, the answer's verdict/species/confidence/top-k/abstention) of a /predict answer."""
    if not answer:
        return None, None
    model = answer.get("model")
    return (dict(model) if isinstance(model, Mapping) else None), {k: answer[k] for k in ANSWER_FIELDS if k in answer}


def claims_dir(queue_dir: str | Path) -> Path:
    return Path(queue_dir) / CLAIMS


def claim_folders(queue_dir: str | Path) -> list[Path]:
    """The claim folders in the queue, oldest id first (temp and other dot names are not claims)."""
    root = claims_dir(queue_dir)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if CLAIM_ID.match(p.name) and p.is_dir() and not p.is_symlink())


def count_claims(queue_dir: str | Path) -> int:
    """Claims in the queue, whatever their status (what `max_claims` caps)."""
    return len(claim_folders(queue_dir))


def read_claims(queue_dir: str | Path) -> list[Claim]:
    """Every readable claim in the queue, oldest first (an unreadable folder is logged and skipped)."""
    out = []
    for folder in claim_folders(queue_dir):
        try:
            out.append(Claim.read(folder))
        except (OSError, ValueError, KeyError) as exc:
            log.warning("skipping unreadable claim %s: %s", folder, exc)
    return sorted(out, key=lambda c: (c.created, c.id))


def get_claim(queue_dir: str | Path, claim_id: str) -> Claim:
    """The claim with this id in the queue; ClaimError 404 unknown_claim if there is none."""
    if not isinstance(claim_id, str) or not CLAIM_ID.match(claim_id):
        raise ClaimError(
            "unknown_claim", f"no claim {str(claim_id)[:64]!r} (ids look like 20250101T120000Z-<12 hex>)", 404
        )
    folder = claims_dir(queue_dir) / claim_id
    try:
        return Claim.read(folder)
    except (OSError, ValueError, KeyError):
        raise ClaimError(
            "unknown_claim", f"no claim {claim_id} in the queue (never made, or already used)", 404
        ) from None


def find_duplicate(queue_dir: str | Path, sha256: str) -> Claim | None:
    """The claim already holding this photo (same SHA-256 of the cleaned JPEG), if any."""
    for folder in claim_folders(queue_dir):
        if folder.name.endswith("-" + sha256[:12]):
            try:
                claim = Claim.read(folder)
            except (OSError, ValueError, KeyError):
                continue
            if claim.sha256 == sha256:
                return claim
    return None


def check_room(queue_dir: str | Path, sha256: str, max_claims: int | None) -> None:
    """Refuse early (before asking the model): 409 duplicate_claim, 507 queue_full."""
    same = find_duplicate(queue_dir, sha256)
    if same is not None:
        raise ClaimError(
            "duplicate_claim", f"this photo is already claimed (claim {same.id}, status decided by review)", 409
        )
    if max_claims is not None and count_claims(queue_dir) >= max_claims:
        raise ClaimError(
            "queue_full",
            f"the feedback queue holds {max_claims} claims already; they must be reviewed and used by a retrain first",
            507,
        )


def add_claim(
    queue_dir: str | Path,
    species: str,
    photo: bytes,
    *,
    answer: Mapping[str, Any] | None = None,
    client: str = "",
    max_claims: int | None = None,
    now: datetime | None = None,
) -> Claim:
    """Store one claim atomically: photo.jpg + claim.json in a temp folder, fsynced, renamed to claims/<id>.

    `photo` is the cleaned JPEG (mycolens.monitoring.feedback.check_feedback), `answer` the model's /predict answer
    for it, `client` the salted client hash. Refuses duplicates (409) and a full queue (507); returns the claim.
    """
    sha = hashlib.sha256(photo).hexdigest()
    root = claims_dir(queue_dir)
    root.mkdir(parents=True, exist_ok=True)
    sweep_temp(queue_dir)
    check_room(queue_dir, sha, max_claims)
    stamp = (now or datetime.now(UTC)).astimezone(UTC)
    claim_id = f"{stamp:%Y%m%dT%H%M%S}Z-{sha[:12]}"
    model, ans = model_answer(answer)
    claim = Claim(
        id=claim_id,
        species=species,
        sha256=sha,
        created=utc_now(stamp),
        folder=root / claim_id,
        client=client,
        model=model,
        answer=ans,
        model_abstained=bool(ans and (ans.get("abstained") or ans.get("verdict") == "uncertain")),
    )
    tmp = Path(tempfile.mkdtemp(prefix=f".{claim_id}.", suffix=".tmp", dir=root))
    try:
        _write_synced(tmp / PHOTO, photo)
        _write_synced(tmp / CLAIM_JSON, (json.dumps(claim.to_dict(), indent=2, sort_keys=True) + "\n").encode())
        os.chmod(tmp, 0o755 & ~_umask())
        try:
            os.rename(tmp, claim.folder)  # fails when the folder exists: the same photo in the same second
        except OSError:
            if claim.folder.exists():
                raise ClaimError("duplicate_claim", f"this photo is already claimed (claim {claim_id})", 409) from None
            raise
        _fsync_dir(root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return claim


def sweep_temp(queue_dir: str | Path, max_age_s: float = TEMP_MAX_AGE_S) -> int:
    """Remove temp folders a crash left in claims/ (older than `max_age_s`); they were never claims."""
    root, removed = claims_dir(queue_dir), 0
    if not root.is_dir():
        return 0
    for p in root.iterdir():
        if p.name.startswith(".") and p.name.endswith(".tmp") and p.is_dir():
            with contextlib.suppress(OSError):
                if time.time() - p.stat().st_mtime > max_age_s:
                    shutil.rmtree(p)
                    removed += 1
    return removed


# ------------------------------------------------------------------ client hash


def client_hash(queue_dir: str | Path, address: str, salt: str | None = None) -> str:
    """sha256(salt + client address), 16 hex: groups one client's claims without storing the address.

    `salt` comes from the environment when configured; else the queue's own random salt file (made once, 0600).
    """
    key = salt.encode() if salt else queue_salt(queue_dir)
    return hashlib.sha256(key + str(address).encode()).hexdigest()[:16]


def queue_salt(queue_dir: str | Path) -> bytes:
    """The queue's salt file, created once with mode 0600 (a link from a private temp file: no half-written salt)."""
    path = Path(queue_dir) / SALT
    if path.is_file():
        return path.read_bytes().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".salt.", suffix=".tmp", dir=path.parent)  # mkstemp: 0600
    try:
        os.write(fd, secrets.token_hex(32).encode())
        os.fsync(fd)
        os.close(fd)
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)  # another process may have won: its salt is the one
    finally:
        os.unlink(tmp)
    return path.read_bytes().strip()


# ------------------------------------------------------------------ decisions


@dataclass(frozen=True)
class Decision:
    """One line of decisions.jsonl: who decided what about which claim, when, and how (cli | http)."""

    claim: str
    decision: str  # approve | reject | used
    reviewer: str
    time: str
    note: str = ""
    via: str = "cli"
    token: str | None = None  # fingerprint of the bearer token used over HTTP (never the token)

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in ("time", "claim", "decision", "reviewer", "note", "via")}
        if self.token:
            d["token"] = self.token
        return d


def decisions_path(queue_dir: str | Path) -> Path:
    return Path(queue_dir) / DECISIONS


def append_decision(queue_dir: str | Path, decision: Decision) -> None:
    """Append one JSON line (O_APPEND, under an exclusive lock, flushed and fsynced) to decisions.jsonl.

    A line cut short by a crash is closed with a newline first, so it cannot swallow the next decision.
    """
    path = decisions_path(queue_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(decision.to_dict(), sort_keys=True, ensure_ascii=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        if size and _last_byte(path, size) != b"\n":
            line = b"\n" + line
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)  # closing releases the lock


def _last_byte(path: Path, size: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(size - 1)
        return f.read(1)


def read_decisions(queue_dir: str | Path) -> dict[str, list[Decision]]:
    """Decisions per claim id, in log order; a damaged line (a crash mid-write) is logged and skipped."""
    out: dict[str, list[Decision]] = {}
    path = decisions_path(queue_dir)
    if not path.is_file():
        return out
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                d = json.loads(raw)
                dec = Decision(
                    claim=str(d["claim"]),
                    decision=str(d["decision"]),
                    reviewer=str(d["reviewer"]),
                    time=str(d["time"]),
                    note=str(d.get("note", "")),
                    via=str(d.get("via", "cli")),
                    token=d.get("token"),
                )
            except (ValueError, KeyError, TypeError):
                log.warning("%s line %d is damaged; skipped", path, n)
                continue
            out.setdefault(dec.claim, []).append(dec)
    return out


@dataclass(frozen=True)
class ClaimState:
    """A claim with its derived status and who approved / rejected it (each reviewer's latest decision)."""

    claim: Claim
    status: str
    approved_by: tuple[str, ...] = ()
    rejected_by: tuple[str, ...] = ()
    decisions: tuple[Decision, ...] = field(default=(), compare=False)
    reviewers_required: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.claim.to_dict(),
            "status": self.status,
            "approved_by": list(self.approved_by),
            "rejected_by": list(self.rejected_by),
            "reviewers_required": self.reviewers_required,
            "decisions": [d.to_dict() for d in self.decisions],
        }


def derive_status(decisions: Iterable[Decision], reviewers_required: int = 1) -> tuple[str, list[str], list[str]]:
    """(status, approvers, rejecters) by the rule in the module docstring."""
    latest: dict[str, Decision] = {}
    used = False
    for d in decisions:
        if d.decision == USED:
            used = True
        elif d.decision in VERDICTS:
            latest[d.reviewer.casefold()] = d
    approvers = [d.reviewer for d in latest.values() if d.decision == "approve"]
    rejecters = [d.reviewer for d in latest.values() if d.decision == "reject"]
    if used:
        return "used", approvers, rejecters
    if rejecters:
        return "rejected", approvers, rejecters
    if len(approvers) >= max(1, int(reviewers_required)):
        return "approved", approvers, rejecters
    return "pending", approvers, rejecters


def claim_states(queue_dir: str | Path, reviewers_required: int = 1, status: str | None = None) -> list[ClaimState]:
    """Every claim in the queue with its status (oldest first); only those with `status` when given."""
    if status is not None and status not in STATUSES:
        raise ClaimError("bad_status", f"status {status!r}: use one of {', '.join(STATUSES)}", 422)
    log_ = read_decisions(queue_dir)
    out = []
    for claim in read_claims(queue_dir):
        decisions = log_.get(claim.id, [])
        st, approvers, rejecters = derive_status(decisions, reviewers_required)
        if status is None or st == status:
            out.append(
                ClaimState(claim, st, tuple(approvers), tuple(rejecters), tuple(decisions), int(reviewers_required))
            )
    return out


def claim_state(queue_dir: str | Path, claim_id: str, reviewers_required: int = 1) -> ClaimState:
    claim = get_claim(queue_dir, claim_id)
    decisions = read_decisions(queue_dir).get(claim.id, [])
    st, approvers, rejecters = derive_status(decisions, reviewers_required)
    return ClaimState(claim, st, tuple(approvers), tuple(rejecters), tuple(decisions), int(reviewers_required))


def approved_claims(queue_dir: str | Path, reviewers_required: int = 1) -> list[ClaimState]:
    """The claims a retrain may use: approved by enough distinct reviewers, rejected by none, not used yet."""
    return claim_states(queue_dir, reviewers_required, status="approved")


def decide(
    queue_dir: str | Path,
    claim_id: str,
    decision: str,
    reviewer: str,
    *,
    note: str = "",
    via: str = "cli",
    token: str | None = None,
    reviewers_required: int = 1,
    now: datetime | None = None,
) -> ClaimState:
    """Log one reviewer's approve | reject of a claim in the queue; returns the claim's new state.

    ClaimError: 422 bad_decision / bad_reviewer / bad_note, 404 unknown_claim, 409 claim_used.
    """
    if decision not in VERDICTS:
        raise ClaimError("bad_decision", f"decision {str(decision)[:32]!r}: use approve or reject", 422)
    if not isinstance(reviewer, str) or not REVIEWER.match(reviewer):
        raise ClaimError(
            "bad_reviewer",
            "give the reviewer's name: 1-64 letters, digits and _.@- (starting with a letter/digit)",
            422,
        )
    if not isinstance(note, str) or len(note) > MAX_NOTE:
        raise ClaimError("bad_note", f"the note must be text of at most {MAX_NOTE} characters", 422)
    state = claim_state(queue_dir, claim_id, reviewers_required)
    if state.status == USED:
        raise ClaimError("claim_used", f"claim {claim_id} was already used by a retrain", 409)
    append_decision(queue_dir, Decision(claim_id, decision, reviewer, utc_now(now), note, via, token))
    return claim_state(queue_dir, claim_id, reviewers_required)


# ------------------------------------------------------------------ export, retrain use, purge


def export_approved(queue_dir: str | Path, out_dir: str | Path, reviewers_required: int = 1) -> dict[str, Any]:
    """Write the approved claims as <out>/<species>/<sha256>.jpg (the ingest layout) plus <out>/manifest.json.

    The manifest lists each claim id with its photo hash, species and approvers. The folder is replaced whole.
    """
    states = approved_claims(queue_dir, reviewers_required)
    entries, seen = [], set()
    with atomic_dir(out_dir) as tmp:
        for st in states:
            c = st.claim
            if c.sha256 in seen:
                continue
            seen.add(c.sha256)
            target = tmp / c.species / f"{c.sha256}.jpg"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(c.read_photo())
            entries.append(
                {
                    "claim_id": c.id,
                    "species": c.species,
                    "sha256": c.sha256,
                    "path": f"{c.species}/{c.sha256}.jpg",
                    "approved_by": list(st.approved_by),
                }
            )
        manifest = {
            "queue": str(Path(queue_dir)),
            "reviewers_required": int(reviewers_required),
            "exported": utc_now(),
            "claims": entries,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def mark_used(
    queue_dir: str | Path, claim_ids: Iterable[str], archive_dir: str | Path, *, now: datetime | None = None
) -> int:
    """After a retrain took these claims: log `used` for each, then move its folder to archive_dir/<id>.

    Crash-safe and repeatable: the log line comes first (a used claim still in the queue takes no decisions and
    is moved by the next call); the move is a rename, or copy-to-temp + rename + remove across file systems.
    Returns how many claims were marked or moved.
    """
    done = 0
    logged = read_decisions(queue_dir)
    archive = Path(archive_dir)
    for claim_id in claim_ids:
        src = claims_dir(queue_dir) / claim_id
        if not CLAIM_ID.match(claim_id) or not src.is_dir():
            continue
        if not any(d.decision == USED for d in logged.get(claim_id, [])):
            append_decision(queue_dir, Decision(claim_id, USED, "retrain", utc_now(now), "", "retrain"))
        _move_dir(src, archive / claim_id)
        done += 1
    return done


def purge_rejected(queue_dir: str | Path, reviewers_required: int = 1) -> list[str]:
    """Delete the rejected claims' folders (their decisions stay in the log); returns their ids."""
    removed = []
    for st in claim_states(queue_dir, reviewers_required, status="rejected"):
        trash = st.claim.folder.with_name(f".{st.claim.id}.purge.tmp")
        os.rename(st.claim.folder, trash)  # out of the queue at once; the removal itself may be cut short
        shutil.rmtree(trash, ignore_errors=True)
        removed.append(st.claim.id)
    return removed


# ------------------------------------------------------------------ file helpers


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(path, 0o644 & ~_umask())


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _move_dir(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():  # an earlier move copied it already
        shutil.rmtree(src)
        return
    try:
        os.rename(src, dst)
    except OSError:  # another file system: copy to a temp name, rename, then remove the source
        tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp)
        os.rename(tmp, dst)
        shutil.rmtree(src)
    _fsync_dir(dst.parent)
