"""Validation of image/mask pairs: every problem is reported, nothing is silently dropped.

Rules (``RULES``; severity ``error`` makes a pair unusable, ``warning``/``note`` are reported):

==================== ======== ============================================================
rule                 severity meaning
==================== ======== ============================================================
image_without_mask   error    an image has no mask with the same stem
mask_without_image   error    a mask has no image with the same stem
duplicate_stem       error    several files share a stem (also stems differing only in case)
unreadable           error    zero-byte, missing, unknown-format, corrupt or truncated file
size_mismatch        error    image and mask sizes differ (after EXIF orientation)
mask_multichannel    warning  mask has several channels: channel 0 used (or alpha, see io.py)
empty_mask           warning  mask is all background
ignored_file         warning  a non-image file inside an image or mask folder
count_mismatch       warning  a known dataset has another number of pairs than published
soft_mask            note     mask has values other than 0 and 255 (kept as soft targets)
mask_01              note     mask stored as 0/1 instead of 0/255 (read as binary)
mask_16bit           note     16-bit mask (divided by 65535)
image_16bit          note     16-bit image reduced to 8 bits
image_converted      note     grayscale / RGBA / CMYK / palette ... converted to RGB
exif_rotated         note     EXIF orientation applied to the image (mask must line up)
==================== ======== ============================================================

``level="full"`` decodes every file (finds truncation and mask content problems);
``level="header"`` only opens headers (fast; finds pairing, empty, unreadable-header and size
problems).  A successful full check is remembered in a stamp keyed by every file's path, size
and modification time (``$SALSEG_CACHE_DIR`` or ``~/.cache/salseg``), so a data module does not
decode an unchanged data set twice.

``apply_policy(report, on_error)``: ``"raise"`` (default, strict) raises
:class:`~salseg.data.errors.DataCheckError` listing every error; ``"skip"`` drops the
offending pairs, prints a summary with counts and writes a log file listing every skipped
file and why.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from salseg.atomic import write_text_atomic
from salseg.data.errors import DataCheckError, DataError
from salseg.data.io import image_size, load_image, load_mask
from salseg.data.sources import Listing, Pair

CHECK_VERSION = 1
RULES: dict[str, str] = {
    "image_without_mask": "error",
    "mask_without_image": "error",
    "duplicate_stem": "error",
    "unreadable": "error",
    "size_mismatch": "error",
    "mask_multichannel": "warning",
    "empty_mask": "warning",
    "ignored_file": "warning",
    "count_mismatch": "warning",
    "soft_mask": "note",
    "mask_01": "note",
    "mask_16bit": "note",
    "image_16bit": "note",
    "image_converted": "note",
    "exif_rotated": "note",
}


@dataclass
class Issue:
    """One finding: rule, severity, the file it concerns and a message."""

    rule: str
    path: str
    message: str
    pair: str | None = None  # stem of the pair it belongs to (None for listing problems)

    @property
    def severity(self) -> str:
        return RULES[self.rule]

    def __str__(self) -> str:
        return f"[{self.severity}:{self.rule}] {self.path}: {self.message}"


@dataclass
class CheckReport:
    """All findings for a set of pairs, and the pairs without errors."""

    name: str
    n_pairs: int = 0
    issues: list[Issue] = field(default_factory=list)
    ok_pairs: list[Pair] = field(default_factory=list)
    level: str = "full"
    from_stamp: bool = False
    soft_pixel_masks: int = 0

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "error"]

    def counts(self) -> Counter:
        return Counter(i.rule for i in self.issues)

    def summary(self, max_examples: int = 5) -> str:
        c = self.counts()
        lines = [f"data check '{self.name}': {self.n_pairs} pairs listed, {len(self.ok_pairs)} usable, "
                 f"{len(self.errors)} error(s) (level={self.level}"
                 + (", cached result" if self.from_stamp else "") + ")"]
        for rule in RULES:
            if c.get(rule):
                lines.append(f"  {RULES[rule]:7s} {rule:20s} {c[rule]}")
                examples = [i for i in self.issues if i.rule == rule][:max_examples]
                for i in examples:
                    lines.append(f"            {i.path}: {i.message}")
                if c[rule] > max_examples:
                    lines.append(f"            ... and {c[rule] - max_examples} more")
        return "\n".join(lines)


def _issue(rule: str, path: str, message: str, pair: str | None = None) -> Issue:
    return Issue(rule, str(path), message, pair)


def listing_issues(listing: Listing) -> list[Issue]:
    """Pairing problems found while listing a source."""
    out: list[Issue] = []
    for f in listing.images_without_masks:
        out.append(_issue("image_without_mask", f, "no mask with this stem"
                          + (f" in {listing.mask_dir}" if listing.mask_dir else "")))
    for f in listing.masks_without_images:
        out.append(_issue("mask_without_image", f, "no image with this stem"
                          + (f" in {listing.image_dir}" if listing.image_dir else "")))
    for stem, files in listing.duplicate_stems:
        for f in files:
            out.append(_issue("duplicate_stem", f, f"stem {stem!r} is shared by {len(files)} files: "
                              + ", ".join(os.path.basename(x) for x in files)))
    for f in listing.ignored_files:
        out.append(_issue("ignored_file", f, "not an image file (ignored)"))
    if listing.expected_count is not None and listing.expected_count != len(listing.pairs) \
            and not listing.has_pairing_errors:
        where = listing.image_dir or listing.name
        out.append(_issue("count_mismatch", where,
                          f"{len(listing.pairs)} pairs, the published {listing.name} has "
                          f"{listing.expected_count}"))
    return out


def check_pair(pair: Pair, level: str = "full") -> list[Issue]:
    """Check one pair's files; see the module docstring for the rules."""
    issues: list[Issue] = []
    stem = pair.stem
    if level == "header":
        try:
            ih = image_size(pair.image)
        except DataError as e:
            issues.append(_issue("unreadable", pair.image, e.problem, stem))
            ih = None
        if pair.mask is None:
            return issues
        try:
            mh = image_size(pair.mask)
        except DataError as e:
            issues.append(_issue("unreadable", pair.mask, e.problem, stem))
            mh = None
        if ih and mh and ih != mh:
            issues.append(_issue("size_mismatch", pair.mask,
                                 f"mask is {mh[1]}x{mh[0]} (WxH), image {pair.image} is {ih[1]}x{ih[0]}",
                                 stem))
        return issues
    img = msk = None
    try:
        img = load_image(pair.image, fast=False, pixels=False)  # strict Pillow decoding
    except DataError as e:
        issues.append(_issue("unreadable", pair.image, e.problem, stem))
    if img is not None:
        for note in img.notes:
            if note.startswith("EXIF"):
                issues.append(_issue("exif_rotated", pair.image, note, stem))
            elif "16-bit" in note:
                issues.append(_issue("image_16bit", pair.image, note, stem))
            else:
                issues.append(_issue("image_converted", pair.image,
                                     f"{img.mode} image: {note}", stem))
    if pair.mask is None:
        return issues
    try:
        msk = load_mask(pair.mask, fast=False)
    except DataError as e:
        issues.append(_issue("unreadable", pair.mask, e.problem, stem))
    if msk is not None:
        for note in msk.notes:
            if note.startswith("mask stored as 0/1"):
                issues.append(_issue("mask_01", pair.mask, note, stem))
            elif note.startswith("EXIF"):
                issues.append(_issue("exif_rotated", pair.mask, note, stem))
            elif "16-bit" in note and "colour" not in note:
                issues.append(_issue("mask_16bit", pair.mask, note, stem))
            else:  # several channels, alpha, palette, other modes
                issues.append(_issue("mask_multichannel", pair.mask, note, stem))
        soft = msk.soft_pixels
        if soft:
            frac = soft / max(msk.array.size, 1)
            issues.append(_issue("soft_mask", pair.mask,
                                 f"{soft} pixels ({100 * frac:.2f}%) strictly between 0 and 255 "
                                 "(kept as soft targets)", stem))
        if not bool((msk.array > 0).any()):
            issues.append(_issue("empty_mask", pair.mask, "mask is all background", stem))
    if img is not None and msk is not None:
        ih, mh = img.hw, msk.array.shape[:2]
        if ih != mh:
            msg = f"mask is {mh[1]}x{mh[0]} (WxH), image {pair.image} is {ih[1]}x{ih[0]}"
            if img.exif_transposed and tuple(img.raw_size) == tuple(mh):
                msg += (" after its EXIF orientation; the mask matches the image as stored "
                        "(before rotation): rotate the mask too, or remove the image's "
                        "orientation tag")
            issues.append(_issue("size_mismatch", pair.mask, msg, stem))
    return issues


def _check_many(pairs: Sequence[Pair], level: str) -> list[list[Issue]]:
    return [check_pair(p, level) for p in pairs]


def _cache_dir() -> Path:
    return Path(os.environ.get("SALSEG_CACHE_DIR") or Path.home() / ".cache" / "salseg")


def _stamp_key(pairs: Sequence[Pair], level: str) -> str | None:
    h = hashlib.sha1(f"v{CHECK_VERSION}:{level}".encode())
    seen: set[str] = set()
    for p in pairs:
        for f in (p.image, p.mask):
            if f is None or f in seen:
                continue
            seen.add(f)
            try:
                st = os.stat(f)
            except OSError:
                return None
            h.update(f"{os.path.abspath(f)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def check_pairs(
    pairs: Sequence[Pair],
    name: str = "data",
    listing: Listing | None = None,
    level: str = "full",
    workers: int = 0,
    use_stamp: bool = True,
) -> CheckReport:
    """Check ``pairs`` (and the pairing problems of ``listing``); returns a report."""
    if level not in ("full", "header", "none"):
        raise ValueError(f"check level must be 'full', 'header' or 'none', got {level!r}")
    report = CheckReport(name=name, n_pairs=len(pairs), level=level)
    if listing is not None:
        report.issues.extend(listing_issues(listing))
    if level == "none":
        report.ok_pairs = list(pairs)
        return report
    # files shared by several pairs (virtual flips) are checked once
    unique: dict[tuple[str, str | None], Pair] = {}
    for p in pairs:
        unique.setdefault((p.image, p.mask), p)
    todo = list(unique.values())
    key = _stamp_key(todo, level) if use_stamp else None
    stamp = _cache_dir() / "checks" / f"{key}.json" if key else None
    if stamp is not None and stamp.is_file():
        try:
            saved = json.loads(stamp.read_text())
            report.issues.extend(Issue(**d) for d in saved["issues"])
            report.ok_pairs = list(pairs)
            report.soft_pixel_masks = sum(1 for i in report.issues if i.rule == "soft_mask")
            report.from_stamp = True
            return report
        except (OSError, ValueError, TypeError, KeyError):
            pass
    if workers and workers > 1 and len(todo) >= 64:
        chunks = [todo[i::workers] for i in range(workers)]
        with ProcessPoolExecutor(max_workers=workers) as ex:
            results = list(ex.map(_check_many, chunks, [level] * workers))
        per_pair: dict[tuple[str, str | None], list[Issue]] = {}
        for chunk, res in zip(chunks, results):
            for p, iss in zip(chunk, res):
                per_pair[(p.image, p.mask)] = iss
    else:
        per_pair = {(p.image, p.mask): check_pair(p, level) for p in todo}
    bad: set[tuple[str, str | None]] = set()
    file_issues: list[Issue] = []
    for k in unique:
        iss = per_pair[k]
        file_issues.extend(iss)
        if any(i.severity == "error" for i in iss):
            bad.add(k)
    report.issues.extend(file_issues)
    report.ok_pairs = [p for p in pairs if (p.image, p.mask) not in bad]
    report.soft_pixel_masks = sum(1 for i in report.issues if i.rule == "soft_mask")
    if stamp is not None and not report.errors:  # listing issues are recomputed every time
        _atomic_write(stamp, json.dumps({"name": name, "issues": [asdict(i) for i in file_issues]}))
    return report


def _atomic_write(path: Path, text: str) -> None:
    try:
        write_text_atomic(text, path, overwrite=True)
    except OSError:  # a read-only cache only costs a re-check next time
        pass


def write_skip_log(report: CheckReport, log_dir: str | Path | None = None) -> Path:
    """Write the list of skipped files (one line per error) and return the log path."""
    log_dir = Path(log_dir) if log_dir else Path.cwd()
    log_dir.mkdir(parents=True, exist_ok=True)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in report.name)
    path = log_dir / f"salseg-data-skipped-{safe}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    lines = [f"# salseg data check '{report.name}': {len(report.errors)} error(s); "
             "every file below was skipped", "# rule\tfile\tproblem"]
    lines += [f"{i.rule}\t{i.path}\t{i.message}" for i in report.errors]
    return write_text_atomic("\n".join(lines) + "\n", path, overwrite=True)


def apply_policy(report: CheckReport, on_error: str = "raise", log_dir: str | Path | None = None,
                 stream=None) -> list[Pair]:
    """Strict (``raise``) or lenient (``skip``) handling of a report's errors; returns usable pairs."""
    stream = stream or sys.stderr
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if not report.errors:
        return report.ok_pairs
    if on_error == "raise":
        listing = "\n".join(f"  {i}" for i in report.errors)
        raise DataCheckError(
            f"data check '{report.name}' found {len(report.errors)} error(s) "
            f"(set data.on_error=skip to skip these files, or fix them):\n{listing}",
            report.errors,
        )
    log = write_skip_log(report, log_dir)
    print(report.summary(), file=stream)
    print(f"[salseg] on_error=skip: skipped {report.n_pairs - len(report.ok_pairs)} pair(s) "
          f"({len(report.errors)} error(s)); every skipped file is listed in {log}", file=stream)
    return report.ok_pairs
