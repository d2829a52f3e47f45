"""Request parsing for /predict: bounded body reads, multipart without spooling, top_k."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from python_multipart.multipart import MultipartParser, parse_options_header

from mycolens.serving.errors import ApiError

RAW_IMAGE_TYPES = ("image/", "application/octet-stream")


@dataclass
class Part:
    name: str
    filename: str | None
    content_type: str
    data: bytes


async def read_limited(
    stream: AsyncIterator[bytes], limit: int, content_length: str | None, drain_factor: int = 4
) -> bytes:
    """The whole body, or ApiError 413 when it is (or claims to be) over `limit` bytes.

    An oversized body is still read (and dropped) up to `drain_factor` x `limit`, so the client gets the 413
    instead of a reset connection.
    """
    declared = None
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError:
            raise ApiError(400, "bad_request", f"invalid Content-Length {content_length!r}") from None
    chunks, size = [], 0
    async for chunk in stream:
        size += len(chunk)
        if size <= limit:
            chunks.append(chunk)
        elif size > drain_factor * limit:
            break
    if size > limit or (declared is not None and declared > limit):
        raise ApiError(
            413, "too_large", f"request body of {max(size, declared or 0)} bytes is over the limit of {limit} bytes"
        )
    return b"".join(chunks)


def parse_multipart(body: bytes, content_type: str) -> list[Part]:
    """Parts of a multipart/form-data body; ApiError 400 when it is malformed."""
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise ApiError(400, "bad_request", "multipart body without a boundary in Content-Type")
    parts: list[Part] = []
    state: dict = {}

    def on_part_begin() -> None:
        state.update(headers={}, data=[], field=b"", value=b"")

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["value"] += data[start:end]

    def on_header_end() -> None:
        state["headers"][state["field"].decode("latin-1").lower()] = state["value"]
        state["field"], state["value"] = b"", b""

    def on_part_data(data: bytes, start: int, end: int) -> None:
        state["data"].append(data[start:end])

    def on_part_end() -> None:
        _, disp = parse_options_header(state["headers"].get("content-disposition", b""))
        name = disp.get(b"name", b"").decode("utf-8", "replace")
        filename = disp.get(b"filename")
        ctype = state["headers"].get("content-type", b"").decode("latin-1")
        parts.append(
            Part(
                name,
                filename.decode("utf-8", "replace") if filename is not None else None,
                ctype,
                b"".join(state["data"]),
            )
        )

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    try:
        parser.write(body)
        parser.finalize()
    except Exception as exc:  # python-multipart raises its own error types
        raise ApiError(400, "bad_request", f"malformed multipart body: {exc}") from None
    return parts


def extract_image(body: bytes, content_type: str | None, field: str = "file") -> bytes:
    """The image bytes of a /predict request: multipart field `field`, or a raw image/* body."""
    if not body:
        raise ApiError(400, "empty", "empty request body: send the photo as multipart field 'file'")
    ctype = (content_type or "").lower()
    if ctype.startswith("multipart/form-data"):
        parts = parse_multipart(body, content_type or "")
        for part in parts:
            if part.name == field:
                return part.data
        found = ", ".join(repr(p.name) for p in parts) or "none"
        raise ApiError(422, "missing_field", f"multipart field {field!r} is required (found {found})")
    if ctype.startswith(RAW_IMAGE_TYPES):
        return body
    raise ApiError(
        415, "unsupported", f"unsupported Content-Type {content_type!r}: send multipart/form-data with field {field!r}"
    )


def parse_top_k(raw: str | None, default: int, maximum: int) -> int:
    """top_k from the query string: an integer in 1..maximum, else ApiError 422."""
    if raw is None or raw == "":
        return default
    try:
        k = int(raw)
    except ValueError:
        raise ApiError(
            422, "invalid_parameter", f"top_k must be an integer between 1 and {maximum}, got {raw!r}"
        ) from None
    if not 1 <= k <= maximum:
        raise ApiError(422, "invalid_parameter", f"top_k must be between 1 and {maximum}, got {k}")
    return k
