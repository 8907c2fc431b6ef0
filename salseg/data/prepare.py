"""Shared steps of ``scripts/prepare_duts.py`` and ``scripts/prepare_dis5k.py``.

Download (atomic, with SHA-256 verification), safe archive extraction that places the
recognised split folders (``DUTS-TR``, ``DIS-VD``, ...) under ``<root>/<DATASET>/``, layout
and count verification, and the data check.  Nothing here overwrites an existing split folder.

Checksums: the dataset hosts publish none that we could verify from this project, so
``OFFICIAL`` lists the URLs with ``sha256=None``.  A download is then hashed and the value is
printed and stored beside the file (``<file>.sha256``); pass ``--sha256 NAME=HEX`` to enforce a
known value (a mismatch deletes the download and fails).  A later run compares an existing
download with its stored hash before reusing it.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tarfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from salseg.atomic import mkdtemp, mkstemp
from salseg.data.check import CheckReport, check_pairs
from salseg.data.errors import DataError
from salseg.data.sources import Listing


@dataclass(frozen=True)
class Remote:
    name: str
    url: str
    sha256: str | None = None


OFFICIAL: dict[str, list[Remote]] = {
    "duts": [
        Remote("DUTS-TR.zip", "http://saliencydetection.net/duts/download/DUTS-TR.zip"),
        Remote("DUTS-TE.zip", "http://saliencydetection.net/duts/download/DUTS-TE.zip"),
    ],
    # Google Drive file named in the DIS README (id 1O1eIuXX1hlGsV7qx4eSkjH231q7G1by1)
    "dis5k": [
        Remote("DIS5K.zip", "https://drive.usercontent.google.com/download?"
               "id=1O1eIuXX1hlGsV7qx4eSkjH231q7G1by1&export=download&confirm=t"),
    ],
}


def sha256_of(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def download(remote: Remote, dest_dir: str | Path, sha256: str | None = None,
             stream=None) -> Path:
    """Download ``remote`` into ``dest_dir`` atomically and verify its SHA-256.

    ``sha256`` (or ``remote.sha256``) is enforced when given; otherwise the computed hash is
    stored in ``<file>.sha256`` and an existing file is reused only if it still matches it.
    """
    stream = stream or sys.stderr
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / remote.name
    want = (sha256 or remote.sha256 or "").lower() or None
    record = dest.with_name(dest.name + ".sha256")
    if dest.is_file():
        have = sha256_of(dest)
        known = want or (record.read_text().split()[0] if record.is_file() else None)
        if known is None or have == known:
            print(f"[prepare] reusing {dest} (sha256 {have})", file=stream)
            return dest
        print(f"[prepare] {dest} does not match its checksum; downloading again", file=stream)
    # a streaming download keeps its own temporary ``.part`` file (checked against its sha256
    # before the rename), so it is not written through salseg.atomic.atomic_output
    fd, tmp = mkstemp(dest_dir, prefix=f".{remote.name}.", suffix=".part")
    try:
        print(f"[prepare] downloading {remote.url}", file=stream)
        with os.fdopen(fd, "wb") as f, urllib.request.urlopen(remote.url, timeout=60) as r:
            shutil.copyfileobj(r, f, length=1 << 20)
        have = sha256_of(tmp)
        if want is not None and have != want:
            raise DataError(f"checksum mismatch: expected sha256 {want}, got {have} "
                            f"(download from {remote.url} deleted)", dest)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    record.write_text(f"{have}  {remote.name}\n")
    print(f"[prepare] {dest}: sha256 {have}"
          + ("" if want else " (no published checksum known; recorded beside the file)"),
          file=stream)
    return dest


def _safe_members_zip(z: zipfile.ZipFile, archive: Path) -> None:
    for n in z.namelist():
        p = Path(n)
        if p.is_absolute() or ".." in p.parts:
            raise DataError(f"unsafe path in archive: {n!r}", archive)


def extract_splits(archive: str | Path, dataset_dir: str | Path, split_names: tuple[str, ...],
                   stream=None) -> list[Path]:
    """Extract ``archive`` and move every folder named like a split into ``dataset_dir``.

    Existing split folders are kept (never overwritten); returns the split folders placed.
    """
    stream = stream or sys.stderr
    archive = Path(archive)
    dataset_dir = Path(dataset_dir)
    dataset_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(mkdtemp(dataset_dir, prefix=".extract-"))
    placed: list[Path] = []
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                _safe_members_zip(z, archive)
                z.extractall(tmp)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as t:
                t.extractall(tmp, filter="data")
        else:
            raise DataError("not a zip or tar archive", archive)
        found: dict[str, Path] = {}
        for d in sorted(tmp.rglob("*"), key=lambda p: len(p.parts)):
            if d.is_dir() and d.name in split_names and d.name not in found:
                if not any(parent in found.values() for parent in d.parents):
                    found[d.name] = d
        if not found:
            raise DataError(f"no folder named {', '.join(split_names)} inside the archive", archive)
        for name, d in found.items():
            target = dataset_dir / name
            if target.exists():
                print(f"[prepare] {target} already exists; kept as is", file=stream)
                continue
            os.replace(d, target)
            placed.append(target)
            print(f"[prepare] extracted {name} -> {target}", file=stream)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return placed


def verify(listings: list[Listing], check_counts: bool, level: str, workers: int,
           stream=None) -> tuple[bool, list[CheckReport]]:
    """Counts + data check of each listing; prints a summary; True when there are no errors."""
    stream = stream or sys.stdout
    ok = True
    reports = []
    for lst in listings:
        n = len(lst.pairs)
        exp = lst.expected_count
        status = "ok" if exp is None or n == exp else f"expected {exp}"
        print(f"[prepare] {lst.name}: {n} pairs ({status}) in {lst.image_dir}", file=stream)
        if check_counts and exp is not None and n != exp:
            ok = False
        if level != "none":
            rep = check_pairs(lst.pairs, name=lst.name, listing=lst, level=level, workers=workers)
            reports.append(rep)
            print(rep.summary(), file=stream)
            if rep.errors:
                ok = False
                for i in rep.errors:
                    print(f"  {i}", file=stream)
    return ok, reports


def report_prepared(tool: str, listings: list[Listing], root: Path, args) -> int:  # noqa: ANN001
    """The end of a prepare script: verify the listings (``args.no_count_check``, ``args.level``,
    ``args.workers``), then print the ``data.root=...`` override; returns the exit status."""
    ok, _ = verify(listings, not args.no_count_check, args.level, args.workers)
    if not ok:
        print(f"{tool}: FAILED (see above)", file=sys.stderr)
        return 1
    print(f"data.root={root}")
    return 0
