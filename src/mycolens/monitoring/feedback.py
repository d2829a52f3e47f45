"""User feedback (a photo and the species it really was), checked and cleaned before it becomes a claim.

POST /feedback never writes a training label: `check_feedback` refuses bad input with the contract's codes and
returns the photo re-encoded from its pixels only (upright; no EXIF, GPS, ICC profile or JPEG comment), which
mycolens.monitoring.claims stores as a claim pending review.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import numpy as np

from mycolens.catalogue import Catalogue
from mycolens.inference.preprocess import ImageRejected, decode_image
from mycolens.utils.images import encode_jpeg

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
class CheckedPhoto:
    """A photo that may become a claim: the claimed species and the cleaned JPEG with its SHA-256 and size."""

    species: str
    jpeg: bytes
    sha256: str
    width: int
    height: int


def check_client_filename(name: str | None) -> None:
    """Refuse an upload whose client-side file name carries a path (it is never used, but it shows a crafted request)."""
    if name and (len(name) > 255 or _BAD_NAME.search(name)):
        raise FeedbackError(
            "bad_filename", "the file name must be a plain name without folders or control characters", 400
        )


def check_species(species_id: object, catalogue: Catalogue) -> str:
    """The species id if the catalogue knows it, else FeedbackError 422 unknown_species."""
    if not isinstance(species_id, str) or species_id not in catalogue.ids:
        shown = species_id if isinstance(species_id, str) and len(species_id) <= 64 else "(too long)"
        raise FeedbackError("unknown_species", f"unknown species {shown!r}; use an id from GET /model", 422)
    return species_id


def check_feedback(
    species_id: str,
    data: bytes,
    catalogue: Catalogue,
    max_bytes: int,
    *,
    filename: str | None = None,
    max_pixels: int = 40_000_000,
    jpeg_quality: int = 95,
) -> CheckedPhoto:
    """Check one photo and its claimed species; FeedbackError (422 / 413 / 400 / 415) if refused, nothing written.

    The JPEG is made from the decoded pixels alone (a fresh image without `info`): Pillow's JPEG save would
    otherwise copy the source's comment and ICC profile, and the EXIF block carries GPS and the camera.
    """
    check_client_filename(filename)
    check_species(species_id, catalogue)
    if len(data) > max_bytes:
        raise FeedbackError("too_large", f"photo of {len(data)} bytes is over the limit of {max_bytes}", 413)
    try:
        img = decode_image(data, max_pixels=max_pixels)
    except ImageRejected as exc:
        raise FeedbackError(exc.code, str(exc), STATUS.get(exc.code, 400)) from None
    encoded = encode_jpeg(np.asarray(img), jpeg_quality)
    return CheckedPhoto(species_id, encoded, hashlib.sha256(encoded).hexdigest(), img.size[0], img.size[1])
