"""Ingest real photos (a folder per species, or a CSV) into verified shards; every refused file is quarantined."""

from __future__ import annotations

import csv as csvlib
import difflib
import io
import multiprocessing
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any

from PIL import Image
from tqdm import tqdm

from mycolens.catalogue import Catalogue
from mycolens.errors import UserError
from mycolens.data.shards import channel_mean_std, grouped_split, sha256_bytes, write_shards
from mycolens.inference.preprocess import ImageRejected, decode_image, resize_center_crop
from mycolens.utils.io import atomic_dir, write_json_atomic

# why a file was refused; decode_image's codes (empty, truncated, not_image, unsupported, too_large, too_small) included
REASONS = (
    "outside_root",
    "missing",
    "unreadable",
    "unknown_label",
    "empty",
    "truncated",
    "not_image",
    "unsupported",
    "too_large",
    "too_small",
    "duplicate",
)
TRAIN_SPLITS = ("train", "val", "test")

# map(fn, items, desc) -> results in input order; the local pool and Ray Data both provide one
Mapper = Callable[[Callable[[Any], Any], list[Any], str], Iterable[Any]]


@dataclass(frozen=True)
class Candidate:
    """One input file that passed the path checks: where it is and what it claims to be."""

    root: str  # "source" or "ood_source"
    rel: str  # posix path relative to its root, as listed
    path: str  # resolved absolute path, inside the root
    label: str  # claimed species id ("" for ood)
    specimen: str  # observation id, or one per file


@dataclass(frozen=True)
class Quarantined:
    """A refused file: why, and where its copy is (relative to the report's folder; "" when it was not read)."""

    path: str
    root: str
    reason: str
    message: str
    sha256: str = ""
    copy: str = ""


@dataclass
class IngestReport:
    """What an ingest kept and refused; `quarantined` lists every refused file with its reason."""

    source: str
    shards_dir: str
    report_path: str
    quarantine_dir: str
    found: int  # files listed under the source (or CSV rows)
    kept: int  # labelled images written to train/val/test
    ood_found: int = 0  # files listed under ood_source (0 when the ood images are synthetic)
    splits: dict[str, int] = field(default_factory=dict)  # images per split, ood included
    per_class: dict[str, int] = field(default_factory=dict)
    quarantined: list[Quarantined] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def by_reason(self) -> dict[str, int]:
        return dict(sorted(Counter(q.reason for q in self.quarantined).items()))

    def summary(self) -> str:
        """One line: kept, per split, quarantined by reason."""
        splits = ", ".join(f"{k} {v}" for k, v in self.splits.items() if k != "ood")
        ood = self.splits.get("ood", 0)
        ood_text = f"ood {ood} of {self.ood_found} files" if self.ood_found else f"ood {ood} synthetic"
        reasons = ", ".join(f"{k} {v}" for k, v in self.by_reason().items()) or "none"
        return (
            f"ingest: kept {self.kept} of {self.found} files ({splits}); {ood_text}; "
            f"quarantined {len(self.quarantined)} ({reasons})"
        )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["quarantined_by_reason"] = self.by_reason()
        return out


def ingest_folder(
    source: str | Path,
    out_dir: str | Path,
    catalogue: Catalogue,
    *,
    csv: str | Path | None = None,
    image_size: int,
    max_side: int,
    min_side: int,
    splits: dict[str, float],
    seed: int,
    workers: int,
    ood_source: str | Path | None = None,
    ood_images: int,
    rows_per_file: int,
    report_path: str | Path,
    jpeg_quality: int = 90,
) -> IngestReport:
    """Verify, deduplicate, downscale and re-encode the photos under `source`; write shards, report and quarantine."""
    mapper = LocalMapper(workers)
    try:
        return run_ingest(
            source,
            out_dir,
            catalogue,
            csv=csv,
            image_size=image_size,
            max_side=max_side,
            min_side=min_side,
            splits=splits,
            seed=seed,
            ood_source=ood_source,
            ood_images=ood_images,
            rows_per_file=rows_per_file,
            report_path=report_path,
            jpeg_quality=jpeg_quality,
            map_files=mapper,
            map_images=mapper,
        )
    finally:
        mapper.close()


class LocalMapper:
    """Ordered map over a spawned process pool (started on first use), with a tqdm bar; in-process for 1 worker."""

    def __init__(self, workers: int) -> None:
        self.workers = max(1, int(workers))
        self.pool: Any = None

    def __call__(self, fn: Callable[[Any], Any], items: list[Any], desc: str) -> Iterator[Any]:
        if self.workers > 1 and len(items) > 1:
            if self.pool is None:
                self.pool = multiprocessing.get_context("spawn").Pool(self.workers)
            chunk = max(1, min(32, len(items) // (4 * self.workers)))
            results: Iterable[Any] = self.pool.imap(fn, items, chunksize=chunk)
        else:
            results = map(fn, items)
        return iter(tqdm(results, total=len(items), desc=desc, unit="img"))

    def close(self) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
            self.pool = None


def serial_map(fn: Callable[[Any], Any], items: list[Any], desc: str) -> Iterator[Any]:
    """In-process ordered map with a tqdm bar."""
    return iter(tqdm(map(fn, items), total=len(items), desc=desc, unit="img"))


def run_ingest(
    source: str | Path,
    out_dir: str | Path,
    catalogue: Catalogue,
    *,
    csv: str | Path | None,
    image_size: int,
    max_side: int,
    min_side: int,
    splits: dict[str, float],
    seed: int,
    ood_source: str | Path | None,
    ood_images: int,
    rows_per_file: int,
    report_path: str | Path,
    jpeg_quality: int,
    map_files: Mapper,
    map_images: Mapper,
) -> IngestReport:
    """The ingest with the parallel steps supplied: `map_files` over (path, decode) items, `map_images` over bytes."""
    root, csv_path, ood_root = _check_arguments(
        source, out_dir, csv, ood_source, max_side, min_side, splits, report_path
    )
    report_path = Path(report_path)
    quarantine_dir = report_path.parent / "quarantine"
    candidates, quarantined, found = list_csv(root, csv_path) if csv_path else list_folder(root)
    ood_found = 0
    if ood_root is not None:
        ood_candidates, ood_bad, ood_found = list_folder(ood_root, root_name="ood_source", labelled=False)
        candidates += ood_candidates
        quarantined += ood_bad
    known = set(catalogue.ids)
    fn = partial(process_file, max_side=max_side, min_side=min_side, jpeg_quality=jpeg_quality)
    items = [(c.path, c.root == "ood_source" or c.label in known) for c in candidates]
    results = list(map_files(fn, items, "verify"))

    kept: list[dict[str, Any]] = []
    ood_rows: list[dict[str, Any]] = []
    first_of: dict[str, str] = {}
    for c, r in zip(candidates, results, strict=True):
        entry = partial(Quarantined, c.rel, c.root, sha256=r["sha256"])
        ood = c.root == "ood_source"
        if not ood and c.label not in known:
            quarantined.append(entry("unknown_label", _unknown_label_message(c, catalogue)))
        elif r["code"]:
            quarantined.append(entry(r["code"], r["message"]))
        elif r["sha256"] in first_of:
            quarantined.append(entry("duplicate", f"same bytes as {first_of[r['sha256']]}"))
        else:
            first_of[r["sha256"]] = c.rel if not ood else f"{c.root}/{c.rel}"
            row = {
                "image": r["image"],
                "label": -1 if ood else catalogue.index(c.label),
                "species": "" if ood else c.label,
                "specimen": c.specimen,
                "sha256": sha256_bytes(r["image"]),
                "source": f"ood/{c.rel}" if ood else c.rel,
            }
            (ood_rows if ood else kept).append(row)

    quarantined.sort(key=lambda q: (q.root != "source", q.path, q.reason))
    report = IngestReport(
        source=str(source),
        shards_dir=str(out_dir),
        report_path=str(report_path),
        quarantine_dir=str(quarantine_dir),
        found=found,
        kept=len(kept),
        ood_found=ood_found,
        quarantined=quarantined,
    )
    if not kept:
        _write_report(report, quarantine_dir, {"source": root, "ood_source": ood_root})
        what = ", ".join(f"{n} {k}" for k, n in report.by_reason().items()) or "nothing"
        layout = f"rows of {csv_path}" if csv_path else f"one subfolder per species id ({catalogue.ids[0]}, ...)"
        raise UserError(
            f"no usable photo in {source}: {found} files found, quarantined {what}; expected {layout}; see {report_path}"
        )

    fractions = {s: float(v) for s, v in splits.items() if v > 0}
    assignment = grouped_split([r["specimen"] for r in kept], [r["label"] for r in kept], fractions, seed)
    rows_by_split: dict[str, list[dict[str, Any]]] = {s: [] for s in (*TRAIN_SPLITS, "ood")}
    for row in kept:
        rows_by_split[assignment[row["specimen"]]].append(row)
    if ood_root is None and ood_images > 0:
        from mycolens.data.generate import generate_ood_rows

        ood_rows = list(generate_ood_rows(ood_images, image_size=image_size, seed=seed, jpeg_quality=jpeg_quality))
    rows_by_split["ood"] = ood_rows

    train = sorted(rows_by_split.get("train", []), key=lambda r: (r["specimen"], r["sha256"]))
    crop = partial(image_for_stats, image_size=image_size)
    mean_std = channel_mean_std(map_images(crop, [r["image"] for r in train], "mean/std"))
    params = {
        "kind": "ingest",
        "source": str(source),
        "csv": str(csv) if csv else None,
        "image_size": int(image_size),
        "max_side": int(max_side),
        "min_side": int(min_side),
        "jpeg_quality": int(jpeg_quality),
        "splits": {k: float(v) for k, v in splits.items()},
        "seed": int(seed),
        "ood_source": str(ood_source) if ood_source else None,
        "ood_images": int(ood_images),
        "rows_per_file": int(rows_per_file),
    }
    report.splits = {s: len(rows) for s, rows in rows_by_split.items()}
    report.per_class = dict(sorted(Counter(r["species"] for r in kept).items()))
    report.warnings = _warnings(kept, assignment, catalogue, splits)
    write_shards(
        out_dir,
        rows_by_split,
        catalogue,
        params=params,
        mean_std=mean_std,
        rows_per_file=rows_per_file,
        extra={"ingest": {"found": found, "kept": len(kept), "quarantined": report.by_reason()}},
    )
    _write_report(report, quarantine_dir, {"source": root, "ood_source": ood_root})
    return report


def process_file(item: tuple[str, bool], *, max_side: int, min_side: int, jpeg_quality: int) -> dict[str, Any]:
    """Read one file; when asked, decode, verify, downscale and re-encode it. Runs in a worker process."""
    path, decode = item
    out: dict[str, Any] = {"sha256": "", "code": "", "message": "", "image": b""}
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        out.update(code="unreadable", message=f"cannot read the file: {exc.strerror or exc}")
        return out
    out["sha256"] = sha256_bytes(data)
    if not decode:
        return out
    try:
        img = decode_image(data, min_side=min_side)
        img = downscale(img, max_side)
        if min(img.size) < min_side:
            raise ImageRejected(
                "too_small", f"{img.size[0]}x{img.size[1]} after downscaling to {max_side} is below {min_side}"
            )
    except ImageRejected as exc:
        out.update(code=exc.code, message=str(exc))
        if exc.code == "not_image" and data[4:8] == b"ftyp":  # HEIC/HEIF/AVIF: phone photos, convert them first
            out.update(
                code="unsupported",
                message=f"unsupported image type {data[8:12].decode(errors='replace')!r}; convert to JPEG",
            )
        return out
    except Exception as exc:  # a malformed file must not stop the ingest: PIL raises assorted errors on bad input
        out.update(code="truncated", message=f"corrupt image ({type(exc).__name__}: {exc})")
        return out
    out["image"] = encode_jpeg(img, jpeg_quality)
    return out


def downscale(img: Image.Image, max_side: int) -> Image.Image:
    """Shrink so the longer side is at most `max_side` (never enlarge)."""
    w, h = img.size
    if max(w, h) <= max_side:
        return img
    scale = max_side / max(w, h)
    return img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS)


def encode_jpeg(img: Image.Image, quality: int) -> bytes:
    """Baseline RGB JPEG without metadata (the pixels are already upright)."""
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def image_for_stats(data: bytes, *, image_size: int) -> Any:
    """What the model sees of a stored image (decode, resize, center crop), for the mean/std."""
    return resize_center_crop(decode_image(data), image_size)


def list_folder(
    root: Path, *, root_name: str = "source", labelled: bool = True
) -> tuple[list[Candidate], list[Quarantined], int]:
    """Every file under `root` (sorted by path); symlinks are followed only while they stay inside the root."""
    root_real = Path(os.path.realpath(root))
    files: list[str] = []
    bad: list[Quarantined] = []
    seen_dirs = {root_real}

    def visit(rel_dir: PurePosixPath) -> None:
        try:
            names = sorted(os.listdir(root / rel_dir))
        except OSError as exc:
            bad.append(
                Quarantined(str(rel_dir), root_name, "unreadable", f"cannot list the folder: {exc.strerror or exc}")
            )
            return
        for entry in names:
            rel = rel_dir / entry
            real = Path(os.path.realpath(root / rel))
            if not _inside(real, root_real):
                bad.append(Quarantined(str(rel), root_name, "outside_root", "resolves outside the folder (symlink)"))
            elif real.is_dir():
                if real not in seen_dirs:  # a link back to a folder already visited would loop
                    seen_dirs.add(real)
                    visit(rel)
            elif real.is_file():
                files.append(str(rel))
            elif not real.exists():
                bad.append(Quarantined(str(rel), root_name, "missing", "broken symlink"))
            else:
                bad.append(Quarantined(str(rel), root_name, "unsupported", "not a regular file"))

    visit(PurePosixPath())
    candidates = []
    for rel in sorted(files):
        parts = PurePosixPath(rel).parts
        label = parts[0] if labelled and len(parts) > 1 else ""
        specimen = rel if labelled else f"ood/{rel}"
        candidates.append(Candidate(root_name, rel, os.path.realpath(root / rel), label, specimen))
    return candidates, bad, len(files) + len(bad)


def list_csv(root: Path, csv_path: Path) -> tuple[list[Candidate], list[Quarantined], int]:
    """Rows of a CSV (path,label[,observation]; paths relative to `root`), refusing paths that leave the root."""
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csvlib.DictReader(f)
        columns = [c.strip().lower() for c in reader.fieldnames or []]
        if "path" not in columns or "label" not in columns:
            raise UserError(f"{csv_path}: needs a header with columns path,label[,observation]; found {columns}")
        # keys normalised; extra unnamed fields (key None) ignored
        rows = [{k.strip().lower(): (v or "").strip() for k, v in row.items() if k is not None} for row in reader]
    root_real = Path(os.path.realpath(root))
    listed: list[tuple[str, int, Candidate]] = []
    bad: list[Quarantined] = []
    for n, row in enumerate(rows, start=2):
        raw = row.get("path", "")
        pure = PurePosixPath(raw.replace("\\", "/"))
        rel = str(pure)
        if not raw:
            bad.append(Quarantined(f"<row {n}>", "source", "missing", f"{csv_path.name} row {n} has no path"))
            continue
        if pure.is_absolute() or ".." in pure.parts:
            bad.append(Quarantined(raw, "source", "outside_root", "absolute path or '..' in the CSV path"))
            continue
        real = Path(os.path.realpath(root / pure))
        if not _inside(real, root_real):
            bad.append(Quarantined(rel, "source", "outside_root", "resolves outside the folder (symlink)"))
        elif not real.exists():
            bad.append(Quarantined(rel, "source", "missing", f"listed in {csv_path.name} row {n} but not found"))
        elif not real.is_file():
            bad.append(Quarantined(rel, "source", "unsupported", "not a regular file"))
        else:
            specimen = row.get("observation") or rel
            listed.append((rel, n, Candidate("source", rel, str(real), row.get("label", ""), specimen)))
    listed.sort(key=lambda t: (t[0], t[1]))
    return [c for _, _, c in listed], bad, len(rows)


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _check_arguments(
    source: str | Path,
    out_dir: str | Path,
    csv: str | Path | None,
    ood_source: str | Path | None,
    max_side: int,
    min_side: int,
    splits: dict[str, float],
    report_path: str | Path,
) -> tuple[Path, Path | None, Path | None]:
    root = Path(source)
    if not root.is_dir():
        raise UserError(f"source folder not found: {source} (give a folder with one subfolder per species id)")
    csv_path = None
    if csv:
        csv_path = Path(csv) if Path(csv).is_file() else root / csv
        if not csv_path.is_file():
            raise UserError(f"CSV file not found: {csv} (looked here and under {source})")
    ood_root = Path(ood_source) if ood_source else None
    if ood_root is not None and not ood_root.is_dir():
        raise UserError(f"OOD folder not found: {ood_source} (a folder of not-mushroom photos, or null for synthetic)")
    if not 1 <= min_side <= max_side:
        raise UserError(f"need 1 <= min_side <= max_side, got min_side={min_side} max_side={max_side}")
    unknown = [s for s in splits if s not in TRAIN_SPLITS]
    if (
        unknown
        or not splits
        or "train" not in splits
        or any(v < 0 for v in splits.values())
        or sum(splits.values()) <= 0
    ):
        raise UserError(f"splits must be non-negative fractions for train[, val, test]; got {dict(splits)}")
    out_real, report_real = Path(os.path.realpath(out_dir)), Path(os.path.realpath(report_path))
    if _inside(report_real, out_real):
        raise UserError(f"report_path {report_path} is inside the shards folder {out_dir}, which is replaced whole")
    for name, path in (("shards folder", out_real), ("report folder", report_real.parent)):
        for given, folder in ((source, root), (ood_source, ood_root)):
            if folder is not None and _inside(path, Path(os.path.realpath(folder))):
                raise UserError(f"the {name} {path} is inside the photo folder {given}: write it elsewhere")
    return root, csv_path, ood_root


def _unknown_label_message(c: Candidate, catalogue: Catalogue) -> str:
    if not c.label:
        return "not inside a species folder" if "/" not in c.rel else "empty label"
    close = difflib.get_close_matches(c.label, catalogue.ids, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"species {c.label!r} is not in the catalogue {catalogue.name!r}{hint}"


def _warnings(
    kept: list[dict[str, Any]], assignment: dict[str, str], catalogue: Catalogue, splits: dict[str, float]
) -> list[str]:
    out = []
    labels_of: dict[str, set[str]] = {}
    for r in kept:
        labels_of.setdefault(r["specimen"], set()).add(r["species"])
    mixed = sorted(s for s, labs in labels_of.items() if len(labs) > 1)
    if mixed:
        out.append(
            f"{len(mixed)} observations have photos of several species (e.g. {mixed[0]}); each stays in one split"
        )
    present = {r["species"] for r in kept}
    missing = [s for s in catalogue.ids if s not in present]
    if missing:
        out.append(f"no photos for {len(missing)} catalogue species: {', '.join(missing)}")
    for split in TRAIN_SPLITS:
        if splits.get(split, 0) > 0:
            lacking = sorted(present - {r["species"] for r in kept if assignment[r["specimen"]] == split})
            if lacking:
                out.append(f"split {split} has no photos of: {', '.join(lacking)} (too few observations)")
    return out


def _copy_into(root: Path, rel: str, target: Path) -> bool:
    """Copy root/rel to target (a content-hash name inside the quarantine folder) if it is still inside root."""
    real = Path(os.path.realpath(root / rel))
    if not _inside(real, Path(os.path.realpath(root))):
        return False
    if target.exists():
        return True
    try:
        target.write_bytes(real.read_bytes())
    except OSError:
        return False
    return True


def _copy_name(q: Quarantined) -> str:
    suffix = PurePosixPath(q.path).suffix.lower()
    return q.sha256 + (suffix if re.fullmatch(r"\.[a-z0-9]{1,10}", suffix) else "")


def _write_report(report: IngestReport, quarantine_dir: Path, roots: dict[str, Path | None]) -> None:
    """Copy each quarantined file that was read into quarantine/ (named by content hash), then write the report."""
    entries = []
    with atomic_dir(quarantine_dir) as tmp:
        for q in report.quarantined:
            root = roots.get(q.root)
            name = _copy_name(q)
            if q.sha256 and root is not None and _copy_into(root, q.path, tmp / name):
                q = Quarantined(q.path, q.root, q.reason, q.message, q.sha256, f"{quarantine_dir.name}/{name}")
            entries.append(q)
    report.quarantined = entries
    write_json_atomic(report.report_path, report.to_dict())
