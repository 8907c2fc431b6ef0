#!/usr/bin/env python
"""Prepare DUTS for salseg: place, report_prepared (layout, counts, data check), print ``data.root=...``.

Examples::

    python scripts/prepare_duts.py --root /datasets --from ~/Downloads/DUTS-TR.zip ~/Downloads/DUTS-TE.zip
    python scripts/prepare_duts.py --root /datasets --download          # official URLs
    python scripts/prepare_duts.py --root /datasets                     # verify what is there

Resulting layout (``configs/data/duts.yaml``, ``duts_te.yaml``)::

    <root>/DUTS/DUTS-TR/DUTS-TR-Image/*.jpg   DUTS-TR-Mask/*.png   (10,553 pairs)
    <root>/DUTS/DUTS-TE/DUTS-TE-Image/*.jpg   DUTS-TE-Mask/*.png   (5,019 pairs)

(the official offline-augmented ``DUTS-TR/im_aug`` + ``gt_aug``, 21,106 pairs, is accepted
too; ``data.offline_hflip=true`` gives the same doubling without writing files).  Archives
are extracted into ``<root>/DUTS``; an already extracted folder given with ``--from`` is used in
place (its parent becomes the root).  Exit status 0 when everything checks out, 1 when the check fails, 2 for a missing
or unusable archive or folder.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from salseg.cli.errors import report
from salseg.data.errors import DataError
from salseg.data.prepare import OFFICIAL, Remote, download, extract_splits, report_prepared
from salseg.data.sources import list_source, resolve_root

SPLITS = ("DUTS-TR", "DUTS-TE")


PROG = "salseg-prepare-duts"

def _checksums(items: list[str]) -> dict[str, str]:
    out = {}
    for it in items:
        name, _, hexd = it.partition("=")
        if not hexd:
            raise DataError(f"--sha256 expects NAME=HEX, got {it!r}")
        out[name] = hexd
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default=None, help="data root (default: $SALSEG_DATA_ROOT or ./data)")
    p.add_argument("--from", dest="sources", nargs="*", default=[],
                   help="DUTS-TR/DUTS-TE archives (.zip/.tar*) or extracted folders")
    p.add_argument("--download", action="store_true", help="download from the official URLs")
    p.add_argument("--url-base", default=None,
                   help="download from this base URL instead (mirror; file names unchanged)")
    p.add_argument("--sha256", nargs="*", default=[], help="NAME=HEX checksums to enforce")
    p.add_argument("--no-count-check", action="store_true",
                   help="do not fail when the pair counts differ from the published ones")
    p.add_argument("--level", choices=("full", "header", "none"), default="full",
                   help="data check level (default: full = decode every file)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = p.parse_args(argv)
    root = resolve_root(args.root)
    try:
        sums = _checksums(args.sha256)
        archives: list[Path] = []
        if args.download:
            for r in OFFICIAL["duts"]:
                url = f"{args.url_base.rstrip('/')}/{r.name}" if args.url_base else r.url
                archives.append(download(Remote(r.name, url, r.sha256), root / "downloads",
                                         sums.get(r.name)))
        for src in args.sources:
            s = Path(src).expanduser().resolve()
            if s.is_dir():
                if s.name in SPLITS:
                    root = s.parent.parent if s.parent.name == "DUTS" else s.parent
                elif (s / "DUTS").is_dir():
                    root = s
                elif any((s / n).is_dir() for n in SPLITS):
                    root = s.parent if s.name == "DUTS" else s
                else:
                    raise DataError(f"no {' or '.join(SPLITS)} folder here", s)
            elif s.is_file():
                archives.append(s)
            else:  # checked for every source before anything is extracted
                raise DataError("no such archive or folder", s)
        for a in archives:
            extract_splits(a, root / "DUTS", SPLITS)
        listings = [list_source({"kind": "duts", "split": "train"}, root),
                    list_source({"kind": "duts", "split": "test"}, root)]
    except DataError as e:
        return report(PROG, e)
    return report_prepared("prepare_duts", listings, root, args)


if __name__ == "__main__":
    sys.exit(main())
