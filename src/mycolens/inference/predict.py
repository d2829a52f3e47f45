"""Offline prediction over the exported model folder: the HTTP API's answer for files, no server, no Ray."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from mycolens.inference.onnx_model import ANSWER_FIELDS, OnnxClassifier
from mycolens.inference.preprocess import ImageRejected, load_for_model

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".heic", ".avif")
CSV_FIELDS = (
    "file",
    *ANSWER_FIELDS,
    "model_version",
    "model_variant",
    "error_code",
    "error_message",
)


def collect_images(path: str | Path) -> list[Path]:
    """The file itself, or every image-named file under a folder (recursive, sorted, hidden files skipped)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"no such file or folder: {path} (give path=IMAGE or path=FOLDER)")
    return sorted(
        p
        for p in path.rglob("*")
        if p.is_file()
        and p.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )


def predict_files(
    files: Iterable[Path], model: OnnxClassifier, top_k: int = 3, max_pixels: int = 40_000_000, batch_size: int = 32
) -> list[dict[str, Any]]:
    """One record per file: {"file", **answer} or {"file", "error": {"code", "message"}} (the API's error codes)."""
    pre = model.preprocessing
    records: list[dict[str, Any]] = []
    pending: list[tuple[int, np.ndarray]] = []

    def flush() -> None:
        if pending:
            batch = np.stack([x for _, x in pending])
            for (i, _), answer in zip(pending, model.answer(batch, top_k=top_k), strict=True):
                records[i].update(answer)
            pending.clear()

    for path in files:
        records.append({"file": str(path)})
        try:
            data = path.read_bytes()
            x = load_for_model(data, int(pre["image_size"]), pre["mean"], pre["std"], max_pixels=max_pixels)
        except ImageRejected as exc:
            records[-1]["error"] = {"code": exc.code, "message": str(exc)}
            continue
        except OSError as exc:
            records[-1]["error"] = {"code": "unreadable", "message": f"cannot read the file: {exc.strerror or exc}"}
            continue
        pending.append((len(records) - 1, x))
        if len(pending) >= batch_size:
            flush()
    flush()
    return records


def to_csv_row(record: dict[str, Any]) -> dict[str, Any]:
    """Flatten one record for CSV."""
    error = record.get("error") or {}
    model = record.get("model") or {}
    row = {k: record.get(k, "") for k in CSV_FIELDS}
    row.update(
        top_k=";".join(f"{t['species']}:{t['probability']}" for t in record.get("top_k", [])),
        model_version=model.get("version", ""),
        model_variant=model.get("variant", ""),
        error_code=error.get("code", ""),
        error_message=error.get("message", ""),
    )
    return row


def render(records: list[dict[str, Any]], fmt: str, single: bool) -> str:
    """JSON (one object for a single file, else a list) or CSV text."""
    if fmt == "json":
        return json.dumps(records[0] if single and len(records) == 1 else records, indent=2) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(to_csv_row(r) for r in records)
        return buf.getvalue()
    raise ValueError(f"unknown format {fmt!r}; use json or csv")
