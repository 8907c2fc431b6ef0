#!/usr/bin/env python
"""Prepare DIS5K for salseg: place, report_prepared (layout, counts, data check), print ``data.root=...``.

Examples::

    python scripts/prepare_dis5k.py --root /datasets --from ~/Downloads/DIS5K.zip
    python scripts/prepare_dis5k.py --root /datasets --download     # Google Drive file of the DIS README
    python scripts/prepare_dis5k.py --root /datasets                # verify what is there

Resulting layout (``configs/data/dis5k.yaml``, ``dis_vd.yaml``, ``dis_te1..4.yaml``)::

    <root>/DIS5K/DIS-TR/{im,gt}   3,000 pairs      <root>/DIS5K/DIS-VD/{im,gt}   470
    <root>/DIS5K/DIS-TE1..4/{im,gt}  500 each      (images .jpg, masks .png)

Archives are extracted into ``<root>/DIS5K``; an extracted folder given with ``--from`` is used
in place.  DIS5K images are large: the check decodes every file (``--level header`` is much
faster), and ``data.cache.enabled=true`` makes 1024x1024 training fast (docs/data.md).
Exit status 0 when everything checks out, 1 when the check fails, 2 for a missing
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
from salseg.data.sources import DIS5K_SPLITS, list_source, resolve_root

PROG = "salseg-prepare-dis5k"

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default=None, help="data root (default: $SALSEG_DATA_ROOT or ./data)")
    p.add_argument("--from", dest="sources", nargs="*", default=[],
                   help="DIS5K archive (.zip/.tar*) or the extracted DIS5K folder")
    p.add_argument("--download", action="store_true", help="download the official archive")
    p.add_argument("--url", default=None, help="download from this URL instead (mirror)")
    p.add_argument("--sha256", default=None, help="checksum of DIS5K.zip to enforce")
    p.add_argument("--splits", nargs="*", default=list(DIS5K_SPLITS),
                   help="splits to verify (default: all six)")
    p.add_argument("--no-count-check", action="store_true",
                   help="do not fail when the pair counts differ from the published ones")
    p.add_argument("--level", choices=("full", "header", "none"), default="full")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = p.parse_args(argv)
    root = resolve_root(args.root)
    try:
        archives: list[Path] = []
        if args.download:
            r = OFFICIAL["dis5k"][0]
            archives.append(download(Remote(r.name, args.url or r.url, r.sha256),
                                     root / "downloads", args.sha256))
        for src in args.sources:
            s = Path(src).expanduser().resolve()
            if s.is_dir():
                if s.name == "DIS5K":
                    root = s.parent
                elif (s / "DIS5K").is_dir():
                    root = s
                elif s.name in DIS5K_SPLITS:
                    root = s.parent.parent if s.parent.name == "DIS5K" else s.parent
                else:
                    raise DataError("no DIS5K folder here", s)
            elif s.is_file():
                archives.append(s)
            else:  # checked for every source before anything is extracted
                raise DataError("no such archive or folder", s)
        for a in archives:
            extract_splits(a, root / "DIS5K", DIS5K_SPLITS)
        listings = [list_source({"kind": "dis5k", "split": s}, root) for s in args.splits]
    except DataError as e:
        return report(PROG, e)
    return report_prepared("prepare_dis5k", listings, root, args)


if __name__ == "__main__":
    sys.exit(main())
