"""Repeated measurements for the benchmarks: median and spread instead of one timing.

One timing of a few images swings by tens of percent on a shared machine; every benchmark
therefore measures the same work several times and reports the **median** rate and the
**spread** ``(max - min) / median`` of the repeats.  Ratios are ratios of medians.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Stats:
    """Rates (work units per second) of the repeats of one measurement."""

    values: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def spread(self) -> float:
        """``(max - min) / median`` of the repeats (0 for a single repeat)."""
        med = self.median
        return (max(self.values) - min(self.values)) / med if med > 0 else 0.0

    def __str__(self) -> str:
        return f"{self.median:.3f} ±{100 * self.spread / 2:.0f}%"


def summarize(values: Sequence[float]) -> Stats:
    if not values:
        raise ValueError("no measurements")
    return Stats(tuple(float(v) for v in values))


def measure(fn: Callable[[], float], repeats: int, warmup: int = 1,
            clock: Callable[[], float] = time.perf_counter) -> Stats:
    """Call ``fn`` ``warmup`` times untimed, then ``repeats`` times; ``fn`` returns the work
    it did (e.g. images); the result holds work per second of every repeat."""
    for _ in range(warmup):
        fn()
    rates = []
    for _ in range(repeats):
        start = clock()
        work = fn()
        rates.append(work / max(clock() - start, 1e-9))
    return summarize(rates)


def interleaved(fns: dict[str, Callable[[], float]], repeats: int, warmup: int = 1,
                clock: Callable[[], float] = time.perf_counter) -> dict[str, Stats]:
    """Like :func:`measure` for several contenders, run in turns (A B C A B C ...), so that a
    change of load on the machine hits all of them alike and their ratio stays stable."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    rates: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            start = clock()
            work = fn()
            rates[key].append(work / max(clock() - start, 1e-9))
    return {k: summarize(v) for k, v in rates.items()}
