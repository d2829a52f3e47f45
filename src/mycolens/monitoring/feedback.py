"""User feedback (a photo and the species it really was) stored in the ingest format: <folder>/<species id>/<sha256>.jpg."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from mycolens.catalogue import Catalogue
from mycolens.inference.preprocess import ImageRejected, decode_image
from mycolens.utils.images import encode_jpeg
from mycolens.utils.io import write_bytes_atomic

# the HTTP status each decode failure maps to (the contract's 400 / 413 / 415)
STATUS = {"empty": 400, "truncated": 400, "not_image": 400, "too_small": 400, "unsupported": 415, "too_large": 413}
_BAD_NAME = re.compile(r"[/\\\x00-\x1f\x7f]|^\.\.?$")


class FeedbackError(ValueError):
    """Feedback that is refused; `code` and `status` give the JSON error and the HTTP status."""

    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


@dataclass(frozen=True)
class StoredFeedback:
    """Where a feedback photo went: path, species, content hash, and whether the same photo was already there."""

    path: Path
    species: str
    sha256: str
    duplicate: bool

    def to_dict(self) -> dict[str, object]:
        return {"stored": True, "species": self.species, "sha256": self.sha256, "duplicate": self.duplicate}


def check_client_filename(name: str | None) -> None:
    """Refuse an upload whose client-side file name carries a path (it is never used, but it shows a crafted request)."""
    if name and (len(name) > 255 or _BAD_NAME.search(name)):
        raise FeedbackError(
            "bad_filename", "the file name must be a plain name without folders or control characters", 400
        )


def store_feedback(
    folder: str | Path,
    species_id: str,
    data: bytes,
    catalogue: Catalogue,
    max_bytes: int,
    *,
    filename: str | None = None,
    max_pixels: int = 40_000_000,
    max_files: int | None = None,
    jpeg_quality: int = 95,
) -> StoredFeedback:
    """Check and store one photo as folder/<species>/<sha256>.jpg (upright, re-encoded, metadata such as GPS dropped)."""
    check_client_filename(filename)
    if not isinstance(species_id, str) or species_id not in catalogue.ids:
        shown = species_id if isinstance(species_id, str) and len(species_id) <= 64 else "(too long)"
        raise FeedbackError("unknown_species", f"unknown species {shown!r}; use an id from GET /model", 422)
    if len(data) > max_bytes:
        raise FeedbackError("too_large", f"photo of {len(data)} bytes is over the limit of {max_bytes}", 413)
    try:
        img = decode_image(data, max_pixels=max_pixels)
    except ImageRejected as exc:
        raise FeedbackError(exc.code, str(exc), STATUS.get(exc.code, 400)) from None
    encoded = encode_jpeg(img, jpeg_quality)  # the pixels only: EXIF (location, device) is not kept
    digest = hashlib.sha256(encoded).hexdigest()
    target = Path(folder) / species_id / f"{digest}.jpg"
    if target.is_file():
        return StoredFeedback(target, species_id, digest, True)
    if max_files is not None and count_feedback(folder) >= max_files:
        raise FeedbackError(
            "feedback_full", f"the feedback folder holds {max_files} photos already; retrain first", 507
        )
    write_bytes_atomic(target, encoded)
    return StoredFeedback(target, species_id, digest, False)


def count_feedback(folder: str | Path) -> int:
    """Photos stored in a feedback folder (one level of species subfolders)."""
    root = Path(folder)
    return sum(1 for p in root.glob("*/*.jpg") if p.is_file()) if root.is_dir() else 0
