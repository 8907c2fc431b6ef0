"""Timing for the benchmarks: interleaved windows, paired ratios with an interval, load marks.

A benchmark ratio compares two contenders (salseg vs a reference).  On a shared machine the
load changes while they run; timing A fully and then B lets that change land on one side only
(ratios moved 6x between runs, issue 24).  So every ratio here is measured this way:

* The contenders run in **windows** of a few steps, in turns, the order alternating
  (A B, B A, A B, ...), so a slowly changing load hits both sides of a pair of windows alike.
  A contender whose peak memory must be its own runs in its own long-lived process
  (:class:`Worker`, driven through a pipe: "run N steps" -> a :class:`Window`); others are
  plain callables in this process (:func:`local`).
* Every window records its wall time, the CPU time the measured process got (``os.times``),
  the CPU threads the contender asked for and the 1-minute load average.
* The ratio is the **median of the paired per-window ratios** (rate of A in window i / rate of
  B in window i), with a bootstrap confidence interval of that median (fixed seed:
  deterministic), see :func:`paired_ratio`.
* A ratio is marked ``unstable`` when its interval is wider than ±10 % of it, or when a
  contender got less CPU than it asked for (median of ``cpu / (wall x threads)`` over its
  windows below ``min_cpu_share``): then the machine, not the code, may have set the figure.

A ratio line reads ``RATIO <name> <value> <low> <high> <mark>``; ``benchmarks/run_all.py``
collects these lines (an old-style ``RATIO <name> <value>`` still parses, without interval).

:class:`Stats` / :func:`measure` remain for single-contender rates (median and spread of
repeats).
"""
from __future__ import annotations

import multiprocessing
import os
import random
import statistics
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

MAX_HALF_WIDTH = 0.10  # an interval wider than ±10 % of the ratio is unstable
MIN_CPU_SHARE = 0.5  # cpu / (wall x threads asked) below this: the process was starved


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


# ----------------------------------------------------------------------------- windows


@dataclass(frozen=True)
class Window:
    """One timed window of one contender."""

    work: float  # work units done (images, steps)
    wall: float  # seconds
    cpu: float  # CPU seconds the measured process(es) got in the window
    threads: int  # CPU threads the contender asked for
    load: float  # 1-minute load average at the end of the window

    @property
    def rate(self) -> float:
        return self.work / max(self.wall, 1e-12)

    @property
    def cpu_share(self) -> float:
        """CPU the process got / CPU it asked for (1 = every asked thread busy all along)."""
        return self.cpu / max(self.wall * max(self.threads, 1), 1e-12)


def cpu_seconds(children: bool = False) -> float:
    """User + system CPU time of this process (and of its waited-for children)."""
    t = os.times()
    return t.user + t.system + ((t.children_user + t.children_system) if children else 0.0)


def load_average() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:  # not available on this platform
        return float("nan")


def local(fn: Callable[[], float], threads: int, children: bool = False
          ) -> Callable[[int], Window]:
    """A contender in this process: ``fn()`` does one step and returns its work; the result
    runs ``n`` steps as one :class:`Window` (``children``: count the CPU time of child
    processes that ended in the window, for contenders that start processes)."""

    def window(n: int) -> Window:
        c0, t0 = cpu_seconds(children), time.perf_counter()
        work = sum(fn() for _ in range(n))
        wall = time.perf_counter() - t0
        return Window(work, wall, cpu_seconds(children) - c0, threads, load_average())

    return window


def interleave(contenders: dict[str, Callable[[int], Window]], windows: int, steps: int,
               warmup: int = 1) -> dict[str, list[Window]]:
    """Run every contender ``warmup`` steps (untimed), then ``windows`` windows of ``steps``
    steps each, in turns; the order alternates every window (A B, B A, ...) so that neither
    side always runs first after the other."""
    names = list(contenders)
    if warmup > 0:
        for name in names:
            contenders[name](warmup)
    out: dict[str, list[Window]] = {k: [] for k in names}
    for i in range(windows):
        for name in (names if i % 2 == 0 else names[::-1]):
            out[name].append(contenders[name](steps))
    return out


# ----------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class Ratio:
    """Median of paired per-window ratios, its interval and the load it was measured under."""

    value: float
    low: float
    high: float
    pairs: int
    cpu_share: tuple[float, float]  # median cpu share of numerator / denominator windows
    load: tuple[float, float]  # min / max load average over the windows
    causes: tuple[str, ...] = field(default=())

    @property
    def unstable(self) -> bool:
        return bool(self.causes)

    @property
    def half_width(self) -> float:
        """The larger side of the interval, relative to the ratio."""
        if self.value <= 0:
            return float("inf")
        return max(self.high / self.value - 1, 1 - self.low / self.value)

    @property
    def mark(self) -> str:
        return "unstable(" + ";".join(self.causes) + ")" if self.causes else "ok"

    def line(self, name: str) -> str:
        return f"RATIO {name} {self.value:.3f} {self.low:.3f} {self.high:.3f} {self.mark}"

    def describe(self) -> str:
        return (f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}] ({self.pairs} pairs, "
                f"cpu share {self.cpu_share[0]:.2f}/{self.cpu_share[1]:.2f}, load "
                f"{self.load[0]:.1f}-{self.load[1]:.1f}) {self.mark}")

    def as_dict(self) -> dict[str, Any]:
        return dict(asdict(self), mark=self.mark)


def bootstrap_median(values: Sequence[float], resamples: int = 2000, level: float = 0.95,
                     seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the median (a fixed seed: the same values always give
    the same interval).  With fewer than 3 values the interval is their range."""
    vals = sorted(values)
    if len(vals) < 3:
        return vals[0], vals[-1]
    rng = random.Random(seed)
    n = len(vals)
    meds = sorted(statistics.median(rng.choices(vals, k=n)) for _ in range(resamples))
    lo = meds[int((1 - level) / 2 * (resamples - 1))]
    hi = meds[int((1 + level) / 2 * (resamples - 1))]
    return lo, hi


def paired_ratio(num: Sequence[Window], den: Sequence[Window], *, seed: int = 0,
                 max_half_width: float = MAX_HALF_WIDTH, min_cpu_share: float = MIN_CPU_SHARE,
                 resamples: int = 2000) -> Ratio:
    """Rate of ``num`` / rate of ``den`` from windows taken in turns (window i of each side
    forms a pair): the median of the per-pair ratios, a bootstrap interval of it, and the
    causes that make it unstable (interval wider than ``max_half_width``, a side whose median
    CPU share is below ``min_cpu_share``)."""
    if not num or len(num) != len(den):
        raise ValueError(f"paired windows needed: {len(num)} vs {len(den)}")
    ratios = [a.rate / b.rate for a, b in zip(num, den)]
    value = statistics.median(ratios)
    low, high = bootstrap_median(ratios, resamples=resamples, seed=seed)
    shares = (statistics.median(w.cpu_share for w in num),
              statistics.median(w.cpu_share for w in den))
    loads = [w.load for w in (*num, *den) if w.load == w.load]
    load = (min(loads), max(loads)) if loads else (float("nan"), float("nan"))
    causes = []
    r = Ratio(value, low, high, len(ratios), shares, load)
    if len(ratios) < 3:
        causes.append(f"only {len(ratios)} pairs")
    if r.half_width > max_half_width:
        causes.append(f"interval ±{100 * r.half_width:.0f}%")
    for side, share in zip(("numerator", "denominator"), shares):
        if share < min_cpu_share:
            causes.append(f"{side} got {100 * share:.0f}% of the CPU it asked for")
    return Ratio(value, low, high, len(ratios), shares, load, tuple(causes))


def sequential_ratio(num: Sequence[Window], den: Sequence[Window]) -> float:
    """Ratio of total rates, as a non-interleaved benchmark would report it (all of A's work
    over all of A's time against B's); only to compare with :func:`paired_ratio`."""
    rate = lambda ws: sum(w.work for w in ws) / sum(w.wall for w in ws)  # noqa: E731
    return rate(num) / rate(den)


# ----------------------------------------------------------------------------- workers


class Gate:
    """The worker side of a :class:`Worker`: the contender's code calls :meth:`begin` before
    its first step and :meth:`after_step` after every step; between windows they block until
    the driver asks for the next one (so code that owns its loop, e.g. ``Trainer.fit``, can
    be driven in turns).  ``sync`` is called before a window's end is read (e.g.
    ``torch.cuda.synchronize``); ``on_window_end(tag)`` after each window."""

    def __init__(self, conn, threads: int, sync: Callable[[], None] | None = None,
                 on_window_end: Callable[[str | None], None] | None = None) -> None:
        self.conn, self.threads, self.sync, self.on_window_end = conn, threads, sync, on_window_end
        self.tag: str | None = None
        self.window_start = 0.0
        self._left = 0
        self._work = 0.0
        self._cpu0 = 0.0

    def _wait(self) -> bool:
        msg = self.conn.recv()
        if msg[0] == "stop":
            return False
        _, self._left, self.tag = msg
        self._work = 0.0
        self._cpu0 = cpu_seconds()
        self.window_start = time.perf_counter()
        return True

    def begin(self) -> bool:
        """Wait for the first window; False when told to stop instead."""
        return self._wait()

    def after_step(self, work: float) -> bool:
        """Count one step; at a window's end report it and wait for the next (False: stop)."""
        self._work += work
        self._left -= 1
        if self._left > 0:
            return True
        if self.sync is not None:
            self.sync()
        wall = time.perf_counter() - self.window_start
        window = Window(self._work, wall, cpu_seconds() - self._cpu0, self.threads, load_average())
        if self.on_window_end is not None:
            self.on_window_end(self.tag)
        self.conn.send(("window", window))
        return self._wait()

    def finish(self, result: Any) -> None:
        """Send the contender's final result (after :meth:`begin` / :meth:`after_step` said
        stop)."""
        self.conn.send(("result", result))


def _worker_main(conn, target: Callable[..., Any], arg: Any) -> None:
    try:
        target(conn, arg)
    except Exception:  # report it to the driver, which names the contender and prints it
        try:
            conn.send(("error", traceback.format_exc()))
        except (BrokenPipeError, OSError):
            traceback.print_exc()
        raise SystemExit(1) from None
    finally:
        conn.close()


class WorkerError(RuntimeError):
    """A worker failed, died or took longer than its timeout."""


class Worker:
    """A contender in its own long-lived process (its peak memory is its own).
    ``target(conn, arg)`` runs in the child (a module-level function: spawned), builds the
    contender, and drives its steps through a :class:`Gate` on ``conn``; the driver calls
    :meth:`window` (usable in :func:`interleave`) and finally :meth:`stop`."""

    def __init__(self, name: str, target: Callable[..., Any], arg: Any,
                 timeout: float | None = None) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.name, self.timeout = name, timeout
        self.conn, child = ctx.Pipe()
        # not a daemon: the contender may start processes of its own (DataLoader workers);
        # call kill() (or use the worker as a context manager) if the driver gives up on it
        self.proc = ctx.Process(target=_worker_main, args=(child, target, arg))
        self.proc.start()
        child.close()

    def _recv(self, expect: str, timeout: float | None) -> Any:
        if timeout is not None and not self.conn.poll(timeout):
            self.kill()
            raise WorkerError(f"{self.name}: no answer within {timeout:.0f} s")
        try:
            kind, payload = self.conn.recv()
        except EOFError:
            self.proc.join(5)
            raise WorkerError(f"{self.name}: worker died (exit {self.proc.exitcode})") from None
        if kind == "error":
            self.proc.join(5)
            raise WorkerError(f"{self.name} failed:\n{payload}")
        if kind != expect:
            raise WorkerError(f"{self.name}: expected {expect}, got {kind}")
        return payload

    def window(self, steps: int, tag: str | None = None) -> Window:
        self.conn.send(("run", steps, tag))
        return self._recv("window", self.timeout)

    def stop(self) -> Any:
        """End the worker; returns its final result."""
        self.conn.send(("stop",))
        result = self._recv("result", self.timeout)
        self.proc.join(30)
        return result

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()

    def kill(self) -> None:
        """Stop the worker process now (nothing when it has ended)."""
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(5)
