"""Ingest real photos (a folder per species, or a CSV) into verified shards; every refused file is quarantined."""

from __future__ import annotations

import csv as csvlib
import difflib
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
from mycolens.data.ood_rows import generate_ood_rows
from mycolens.data.shards import channel_mean_std, grouped_split, sha256_bytes, write_shards
from mycolens.errors import UserError
from mycolens.inference.preprocess import ImageRejected, decode_image, resize_center_crop
from mycolens.utils.images import encode_jpeg
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
Row = dict[str, Any]  # one shard row: image, label, species, specimen, sha256, source


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


@dataclass(frozen=True)
class IngestSettings:
    """What an ingest reads and writes, whichever engine verifies the files (ingest_folder's keyword options)."""

    source: str | Path
    out_dir: str | Path
    image_size: int
    max_side: int
    min_side: int
    splits: dict[str, float]
    seed: int
    ood_images: int  # synthetic not-mushroom images when there is no ood_source
    rows_per_file: int
    report_path: str | Path
    csv: str | Path | None = None
    ood_source: str | Path | None = None
    jpeg_quality: int = 90


@dataclass(frozen=True)
class Listing:
    """The list step's result: the files to verify, those refused while listing, and how many files were found."""

    root: Path
    csv_path: Path | None
    ood_root: Path | None
    candidates: list[Candidate]
    quarantined: list[Quarantined]
    found: int
    ood_found: int


def ingest_folder(
    source: str | Path, out_dir: str | Path, catalogue: Catalogue, *, workers: int, **options: Any
) -> IngestReport:
    """Verify, deduplicate, downscale and re-encode the photos under `source`; write shards, report and quarantine.

    `options` are IngestSettings' fields (image_size, max_side, min_side, splits, seed, ood_images, ...).
    """
    settings = IngestSettings(source, out_dir, **options)
    mapper = LocalMapper(workers)
    try:
        return run_ingest(settings, catalogue, map_files=mapper, map_images=mapper)
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
    settings: IngestSettings, catalogue: Catalogue, *, map_files: Mapper, map_images: Mapper
) -> IngestReport:
    """The ingest: list -> verify -> split -> write; `map_files` maps (path, decode) items, `map_images` image bytes."""
    listing = list_inputs(settings)
    kept, ood_rows, refused = verify_files(
        listing.candidates,
        catalogue,
        map_files,
        max_side=settings.max_side,
        min_side=settings.min_side,
        jpeg_quality=settings.jpeg_quality,
    )
    report_path = Path(settings.report_path)
    report = IngestReport(
        source=str(settings.source),
        shards_dir=str(settings.out_dir),
        report_path=str(report_path),
        quarantine_dir=str(report_path.parent / "quarantine"),
        found=listing.found,
        kept=len(kept),
        ood_found=listing.ood_found,
        quarantined=sorted([*listing.quarantined, *refused], key=lambda q: (q.root != "source", q.path, q.reason)),
    )
    roots = {"source": listing.root, "ood_source": listing.ood_root}
    if not kept:
        _write_report(report, Path(report.quarantine_dir), roots)
        raise _nothing_kept(report, listing.csv_path, catalogue)

    rows_by_split, assignment = split_rows(kept, settings.splits, settings.seed)
    if listing.ood_root is None and settings.ood_images > 0:
        ood_rows = generate_ood_rows(
            settings.ood_images, image_size=settings.image_size, seed=settings.seed, jpeg_quality=settings.jpeg_quality
        )
    rows_by_split["ood"] = ood_rows
    report.splits = {s: len(rows) for s, rows in rows_by_split.items()}
    report.per_class = dict(sorted(Counter(r["species"] for r in kept).items()))
    report.warnings = _warnings(kept, assignment, catalogue, settings.splits)
    write_outputs(settings, catalogue, rows_by_split, report, roots, map_images)
    return report


def list_inputs(settings: IngestSettings) -> Listing:
    """List step: check the arguments, then list the source (folder or CSV rows) and the OOD folder, if any."""
    root, csv_path, ood_root = _check_arguments(settings)
    candidates, quarantined, found = list_csv(root, csv_path) if csv_path else list_folder(root)
    ood_found = 0
    if ood_root is not None:
        ood_candidates, ood_bad, ood_found = list_folder(ood_root, root_name="ood_source", labelled=False)
        candidates += ood_candidates
        quarantined += ood_bad
    return Listing(root, csv_path, ood_root, candidates, quarantined, found, ood_found)


def verify_files(
    candidates: list[Candidate],
    catalogue: Catalogue,
    map_files: Mapper,
    *,
    max_side: int,
    min_side: int,
    jpeg_quality: int,
) -> tuple[list[Row], list[Row], list[Quarantined]]:
    """Verify step: read, check and re-encode every candidate; (kept rows, ood rows, refused files), listing order."""
    known = set(catalogue.ids)
    fn = partial(process_file, max_side=max_side, min_side=min_side, jpeg_quality=jpeg_quality)
    items = [(c.path, c.root == "ood_source" or c.label in known) for c in candidates]
    results = list(map_files(fn, items, "verify"))

    kept: list[Row] = []
    ood_rows: list[Row] = []
    refused: list[Quarantined] = []
    first_of: dict[str, str] = {}
    for c, r in zip(candidates, results, strict=True):
        entry = partial(Quarantined, c.rel, c.root, sha256=r["sha256"])
        ood = c.root == "ood_source"
        if not ood and c.label not in known:
            refused.append(entry("unknown_label", _unknown_label_message(c, catalogue)))
        elif r["code"]:
            refused.append(entry(r["code"], r["message"]))
        elif r["sha256"] in first_of:
            refused.append(entry("duplicate", f"same bytes as {first_of[r['sha256']]}"))
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
    return kept, ood_rows, refused


def split_rows(kept: list[Row], splits: dict[str, float], seed: int) -> tuple[dict[str, list[Row]], dict[str, str]]:
    """Split step: whole observations to train/val/test; (rows per split, ood still empty; each observation's split)."""
    fractions = {s: float(v) for s, v in splits.items() if v > 0}
    assignment = grouped_split([r["specimen"] for r in kept], [r["label"] for r in kept], fractions, seed)
    rows_by_split: dict[str, list[Row]] = {s: [] for s in (*TRAIN_SPLITS, "ood")}
    for row in kept:
        rows_by_split[assignment[row["specimen"]]].append(row)
    return rows_by_split, assignment


def write_outputs(
    settings: IngestSettings,
    catalogue: Catalogue,
    rows_by_split: dict[str, list[Row]],
    report: IngestReport,
    roots: dict[str, Path | None],
    map_images: Mapper,
) -> None:
    """Write step: the shards with the train images' mean/std, then the report and copies of the quarantined files."""
    train = sorted(rows_by_split.get("train", []), key=lambda r: (r["specimen"], r["sha256"]))
    crop = partial(image_for_stats, image_size=settings.image_size)
    mean_std = channel_mean_std(map_images(crop, [r["image"] for r in train], "mean/std"))
    write_shards(
        settings.out_dir,
        rows_by_split,
        catalogue,
        params=_manifest_params(settings),
        mean_std=mean_std,
        rows_per_file=settings.rows_per_file,
        extra={"ingest": {"found": report.found, "kept": report.kept, "quarantined": report.by_reason()}},
    )
    _write_report(report, Path(report.quarantine_dir), roots)


def _manifest_params(s: IngestSettings) -> dict[str, Any]:
    """The settings as the manifest records them."""
    return {
        "kind": "ingest",
        "source": str(s.source),
        "csv": str(s.csv) if s.csv else None,
        "image_size": int(s.image_size),
        "max_side": int(s.max_side),
        "min_side": int(s.min_side),
        "jpeg_quality": int(s.jpeg_quality),
        "splits": {k: float(v) for k, v in s.splits.items()},
        "seed": int(s.seed),
        "ood_source": str(s.ood_source) if s.ood_source else None,
        "ood_images": int(s.ood_images),
        "rows_per_file": int(s.rows_per_file),
    }


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


def _check_arguments(s: IngestSettings) -> tuple[Path, Path | None, Path | None]:
    """(source folder, CSV file or None, OOD folder or None), or a UserError that says what is wrong."""
    root = Path(s.source)
    if not root.is_dir():
        raise UserError(f"source folder not found: {s.source} (give a folder with one subfolder per species id)")
    csv_path = None
    if s.csv:
        csv_path = Path(s.csv) if Path(s.csv).is_file() else root / s.csv
        if not csv_path.is_file():
            raise UserError(f"CSV file not found: {s.csv} (looked here and under {s.source})")
    ood_root = Path(s.ood_source) if s.ood_source else None
    if ood_root is not None and not ood_root.is_dir():
        raise UserError(
            f"OOD folder not found: {s.ood_source} (a folder of not-mushroom photos, or null for synthetic)"
        )
    if not 1 <= s.min_side <= s.max_side:
        raise UserError(f"need 1 <= min_side <= max_side, got min_side={s.min_side} max_side={s.max_side}")
    splits = s.splits
    unknown = [k for k in splits if k not in TRAIN_SPLITS]
    if (
        unknown
        or not splits
        or "train" not in splits
        or any(v < 0 for v in splits.values())
        or sum(splits.values()) <= 0
    ):
        raise UserError(f"splits must be non-negative fractions for train[, val, test]; got {dict(splits)}")
    out_real, report_real = Path(os.path.realpath(s.out_dir)), Path(os.path.realpath(s.report_path))
    if _inside(report_real, out_real):
        raise UserError(f"report_path {s.report_path} is inside the shards folder {s.out_dir}, which is replaced whole")
    for name, path in (("shards folder", out_real), ("report folder", report_real.parent)):
        for given, folder in ((s.source, root), (s.ood_source, ood_root)):
            if folder is not None and _inside(path, Path(os.path.realpath(folder))):
                raise UserError(f"the {name} {path} is inside the photo folder {given}: write it elsewhere")
    return root, csv_path, ood_root


def _nothing_kept(report: IngestReport, csv_path: Path | None, catalogue: Catalogue) -> UserError:
    """The error of an ingest that kept no photo: what was refused, and the layout it expected."""
    what = ", ".join(f"{n} {k}" for k, n in report.by_reason().items()) or "nothing"
    layout = f"rows of {csv_path}" if csv_path else f"one subfolder per species id ({catalogue.ids[0]}, ...)"
    return UserError(
        f"no usable photo in {report.source}: {report.found} files found, quarantined {what}; expected {layout}; "
        f"see {report.report_path}"
    )


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
