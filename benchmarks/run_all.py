"""Run every ``benchmarks/bench_*.py`` and print one summary table of their ratios.

Each benchmark prints its own table and ends with lines ``RATIO <name> <value> <low> <high>
<mark>`` (``benchmarks/timing.py``: the median of paired per-window ratios, its 95 % interval,
and ``ok`` or ``unstable(<causes>)``); this runner collects those lines and prints them in one
table, marks included.  The exit status reports only the benchmarks' own failures, never a
ratio or its mark.  ``--full`` runs the benchmarks at full size (default: ``--quick``);
``--args "..."`` passes more arguments to every benchmark (e.g. ``--args "--models u2netp"``
with ``train predict``).
"""
from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def parse_ratio(line: str) -> tuple[str, str, str, str, str] | None:
    """``(name, value, low, high, mark)`` of a ``RATIO`` line (``None`` for other lines); a
    line without an interval gives empty bounds and the mark ``no interval``."""
    parts = line.split(maxsplit=5)
    if len(parts) < 3 or parts[0] != "RATIO":
        return None
    if len(parts) >= 6:
        return parts[1], parts[2], parts[3], parts[4], parts[5]
    return parts[1], parts[2], "", "", "no interval"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--full", action="store_true", help="run the full-size benchmarks")
    parser.add_argument("--args", default="", help="more arguments for every benchmark")
    parser.add_argument("names", nargs="*", help="only these benchmarks (e.g. metrics data)")
    args = parser.parse_args()
    scripts = sorted(HERE.glob("bench_*.py"))
    if args.names:
        scripts = [s for s in scripts if s.stem.removeprefix("bench_") in args.names]
    if not scripts:
        print("no benchmarks found", file=sys.stderr)
        return 1
    rows, failed = [], []
    for script in scripts:
        print(f"=== {script.name} ===", flush=True)
        cmd = [sys.executable, str(script)] + ([] if args.full else ["--quick"]) + shlex.split(args.args)
        start = time.perf_counter()
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        print(proc.stdout, flush=True)
        if proc.returncode != 0:
            failed.append(script.name)
        for line in proc.stdout.splitlines():
            parsed = parse_ratio(line)
            if parsed:
                rows.append((script.stem, *parsed))
        print(f"({script.name}: {time.perf_counter() - start:.1f} s, exit {proc.returncode})")
    print("\nSummary (ratio > 1 means salseg is faster; interval: 95 %, of the median of "
          "paired per-window ratios)")
    print(f"{'benchmark':<16} {'measure':<38} {'ratio':>7} {'interval':<17} mark")
    for bench, name, value, low, high, mark in rows:
        interval = f"[{low}, {high}]" if low else ""
        print(f"{bench:<16} {name:<38} {value:>7} {interval:<17} {mark}")
    unstable = sum(1 for *_, mark in rows if mark != "ok")
    if unstable:
        print(f"{unstable} of {len(rows)} ratios are not ok: unstable ones were measured on a "
              "machine too busy to tell (the cause is named); rerun on a quieter machine")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
