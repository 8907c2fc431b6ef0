"""Run every ``benchmarks/bench_*.py`` and print one summary table of their ratios.

Each benchmark prints its own table and ends with lines ``RATIO <name> <value>``; this runner
collects those lines.  ``--full`` runs the benchmarks at full size (default: ``--quick``).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--full", action="store_true", help="run the full-size benchmarks")
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
        cmd = [sys.executable, str(script)] + ([] if args.full else ["--quick"])
        start = time.perf_counter()
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        print(proc.stdout, flush=True)
        if proc.returncode != 0:
            failed.append(script.name)
        for line in proc.stdout.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == "RATIO":
                rows.append((script.stem, parts[1], parts[2]))
        print(f"({script.name}: {time.perf_counter() - start:.1f} s, exit {proc.returncode})")
    print("\nSummary (ratio > 1 means salseg is faster)")
    print(f"{'benchmark':<20} {'measure':<40} {'ratio':>8}")
    for bench, name, value in rows:
        print(f"{bench:<20} {name:<40} {value:>8}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
