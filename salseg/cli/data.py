"""``salseg-data``: check data sets for bad input, generate the synthetic set.

Usage::

    salseg-data check --images DIR --masks DIR [--level full|header] [--on-error raise|skip]
    salseg-data check --pairs LIST_FILE
    salseg-data check data=duts [data.root=/datasets ...]      # any configs/data/*.yaml
    salseg-data synthetic [--root data] [--variant sod|dis] [--seed 0] [--n-train N] ...

``check`` lists every offending file and exits 1 when it finds an error (2 for a missing
folder/layout or bad arguments); warnings and notes (soft masks, converted images, ...) are
reported but do not fail.  ``--on-error skip`` additionally writes the log of files a
training run with ``data.on_error=skip`` would skip.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from salseg.cli.errors import report as report_error
from salseg.data.check import RULES, CheckReport, check_pairs, write_skip_log
from salseg.data.errors import DataError
from salseg.data.sources import list_source

PROG = "salseg-data"


def _print_report(report: CheckReport, max_notes: int) -> None:
    print(f"== {report.name}: {report.n_pairs} pairs, {len(report.ok_pairs)} usable, "
          f"{len(report.errors)} error(s)" + (" (cached result)" if report.from_stamp else ""))
    counts = report.counts()
    for rule, sev in RULES.items():
        n = counts.get(rule, 0)
        if not n:
            continue
        print(f"  {sev:7s} {rule:20s} {n}")
        limit = None if sev == "error" else max_notes  # every error is named
        shown = [i for i in report.issues if i.rule == rule][:limit]
        for i in shown:
            print(f"      {i.path}: {i.message}")
        if limit is not None and n > limit:
            print(f"      ... and {n - limit} more (--max-notes to see more)")


def cmd_check(args: argparse.Namespace) -> int:
    jobs: list[tuple[str, dict]] = []
    root = None
    synthetic: dict = {}
    try:
        if args.images:
            jobs.append(("check", {"kind": "folder", "images": str(Path(args.images).resolve()),
                                   "masks": None if args.masks is None else str(Path(args.masks).resolve()),
                                   "name": Path(args.images).name}))
        if args.pairs:
            jobs.append(("check", {"kind": "list", "file": str(Path(args.pairs).resolve())}))
        if args.overrides:
            if not any(o.startswith("data=") for o in args.overrides):
                return report_error(PROG, "check: overrides need a data config, e.g. data=duts")
            from salseg.data.datamodule import data_config

            datamodule = data_config(args.overrides)
            jobs.extend(datamodule.source_specs())
            root, synthetic = datamodule.root, datamodule.synthetic
        if not jobs:
            return report_error(PROG, "check: give --images DIR --masks DIR, --pairs FILE or "
                                      "data=<config>")
        seen: set[str] = set()
        n_errors = 0
        for _split, spec in jobs:
            listing = list_source(spec, root, synthetic)
            name = spec.get("name") or listing.name
            key = f"{listing.image_dir}|{listing.mask_dir}|{len(listing.pairs)}"
            if key in seen:
                continue
            seen.add(key)
            report = check_pairs(listing.pairs, name=name, listing=listing, level=args.level,
                                 workers=args.workers, use_stamp=not args.no_cache)
            _print_report(report, args.max_notes)
            n_errors += len(report.errors)
            if report.errors and args.on_error == "skip":
                log = write_skip_log(report, args.log_dir)
                print(f"  skipped files listed in {log}")
    except DataError as e:
        return report_error(PROG, e)
    except Exception as e:  # a Hydra override error (data.nosuchkey=1): one line too
        from salseg.cli.errors import hydra_error_types

        if not isinstance(e, hydra_error_types()):
            raise
        return report_error(PROG, e)
    if n_errors:
        print(f"FAILED: {n_errors} error(s)", file=sys.stderr)
        return 1
    print("OK")
    return 0


def cmd_synthetic(args: argparse.Namespace) -> int:
    from salseg.data.sources import resolve_root
    from salseg.data.synthetic import ensure_synthetic, make_spec

    spec = make_spec(args.variant, args.seed, args.size, args.n_train, args.n_val)
    path = ensure_synthetic(resolve_root(args.root), spec)
    print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check", help="validate images and masks (exit 1 on errors)")
    c.add_argument("overrides", nargs="*", help="data=<config> and Hydra overrides (data.root=...)")
    c.add_argument("--images", help="folder of images")
    c.add_argument("--masks", help="folder of masks (matched by file stem)")
    c.add_argument("--pairs", help="list file of 'image<TAB>mask' lines")
    c.add_argument("--level", choices=("full", "header"), default="full",
                   help="full: decode every file (default); header: headers only (fast)")
    c.add_argument("--on-error", choices=("raise", "skip"), default="raise",
                   help="skip: also write the log of files a run with data.on_error=skip skips")
    c.add_argument("--log-dir", default=None, help="folder for the skip log (default: .)")
    c.add_argument("--workers", type=int, default=0, help="decode in N processes")
    c.add_argument("--max-notes", type=int, default=5, help="examples shown per warning/note")
    c.add_argument("--no-cache", action="store_true", help="ignore remembered results")
    c.set_defaults(func=cmd_check)
    s = sub.add_parser("synthetic", help="generate the embedded synthetic set")
    s.add_argument("--root", default=None, help="data root (default: $SALSEG_DATA_ROOT or ./data)")
    s.add_argument("--variant", choices=("sod", "dis"), default="sod")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--size", type=int, nargs="+", default=None, help="S or H W")
    s.add_argument("--n-train", type=int, default=None)
    s.add_argument("--n-val", type=int, default=None)
    s.set_defaults(func=cmd_synthetic)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "size", None) is not None and len(args.size) == 1:
        args.size = args.size[0]
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
