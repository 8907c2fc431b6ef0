"""The statistics and the drivers of ``benchmarks/timing.py`` (issue 24): paired per-window
ratios with a simulated background load, the ``unstable`` marks, the worker protocol and the
parsing of ``RATIO`` lines by ``benchmarks/run_all.py``.  No timing is asserted: the windows
are synthetic, or only their count and work are checked."""
from __future__ import annotations

import math
import random
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import run_all  # noqa: E402
import timing  # noqa: E402
from timing import Gate, Window, Worker, WorkerError, interleave, local, paired_ratio  # noqa: E402

TRUE_RATIO = 1.5  # A does its work 1.5x as fast as B


def load_factor(t: float) -> float:
    """A background load that changes slowly: the machine gets 1x..4x slower over the run
    and swings on top of that (a minute-scale period)."""
    return 1.0 + 2.0 * min(t / 300.0, 1.0) + 0.8 * math.sin(t / 40.0) ** 2


def simulate(interleaved: bool, windows: int = 12, seed: int = 0
             ) -> tuple[list[Window], list[Window]]:
    """Windows of A and B (1 work unit each; unloaded wall 2 s for A, 3 s for B) on a machine
    whose load factor multiplies every wall time, with 3 % noise per window.  Interleaved:
    A and B take turns (A B, B A, ...); else all of A's windows, then all of B's."""
    rng = random.Random(seed)
    base = {"A": 2.0, "B": 2.0 * TRUE_RATIO}
    out: dict[str, list[Window]] = {"A": [], "B": []}
    order = []
    if interleaved:
        for i in range(windows):
            order += ["A", "B"] if i % 2 == 0 else ["B", "A"]
    else:
        order = ["A"] * windows + ["B"] * windows
    t = 0.0
    for who in order:
        f = load_factor(t)
        wall = base[who] * f * math.exp(rng.gauss(0.0, 0.03))
        # two threads asked; the load takes CPU away in proportion
        out[who].append(Window(1.0, wall, cpu=2 * wall / f ** 0.2, threads=2, load=1 + f))
        t += wall
    return out["A"], out["B"]


def test_paired_ratio_finds_the_true_ratio_under_a_changing_load():
    a, b = simulate(interleaved=True)
    r = paired_ratio(a, b)
    assert r.low <= TRUE_RATIO <= r.high
    assert r.half_width < 0.10 and not r.unstable, r.describe()
    assert r.pairs == 12 and r.load[0] < r.load[1]
    # the same windows measured one contender after the other are far off
    sa, sb = simulate(interleaved=False)
    sequential = timing.sequential_ratio(sa, sb)
    assert not r.low <= sequential <= r.high
    assert abs(sequential / TRUE_RATIO - 1) > 0.3
    # and even their pairing cannot repair it: each pair saw a different load
    assert not paired_ratio(sa, sb).low <= TRUE_RATIO <= paired_ratio(sa, sb).high


def test_paired_ratio_is_deterministic_and_seeded():
    a, b = simulate(interleaved=True, seed=3)
    assert paired_ratio(a, b) == paired_ratio(a, b)
    r0, r1 = paired_ratio(a, b, seed=0), paired_ratio(a, b, seed=1)
    assert r0.value == r1.value


@pytest.mark.parametrize("seed", range(5))
def test_paired_interval_covers_the_truth_for_several_loads(seed):
    a, b = simulate(interleaved=True, windows=8, seed=seed)
    r = paired_ratio(a, b)
    assert r.low <= TRUE_RATIO <= r.high


def test_wide_interval_is_unstable():
    rng = random.Random(0)
    a = [Window(1.0, rng.uniform(1.0, 3.0), 2.0, 1, 1.0) for _ in range(8)]
    b = [Window(1.0, 2.0, 2.0, 1, 1.0) for _ in range(8)]
    r = paired_ratio(a, b)
    assert r.unstable and any(c.startswith("interval") for c in r.causes)
    assert r.mark.startswith("unstable(interval")


def test_starved_process_is_unstable_even_with_a_narrow_interval():
    # every window got 30 % of the two threads' CPU it asked for
    a = [Window(1.0, 2.0, cpu=0.3 * 2.0 * 2, threads=2, load=9.0) for _ in range(8)]
    b = [Window(1.0, 3.0, cpu=3.0 * 2, threads=2, load=9.0) for _ in range(8)]
    r = paired_ratio(a, b)
    assert r.value == pytest.approx(1.5) and r.half_width == pytest.approx(0.0)
    assert r.causes == ("numerator got 30% of the CPU it asked for",)
    assert paired_ratio(a, b, min_cpu_share=0.2).causes == ()


def test_too_few_pairs_are_unstable_and_unpaired_windows_refused():
    w = Window(1.0, 1.0, 1.0, 1, 0.0)
    assert paired_ratio([w, w], [w, w]).causes == ("only 2 pairs",)
    with pytest.raises(ValueError, match="paired windows"):
        paired_ratio([w], [w, w])


def test_ratio_line_parses_in_run_all():
    a, b = simulate(interleaved=True)
    line = paired_ratio(a, b).line("train_vs_official_u2netp")
    name, value, low, high, mark = run_all.parse_ratio(line)
    assert name == "train_vs_official_u2netp" and mark == "ok"
    assert float(low) <= float(value) <= float(high)
    starved = Window(1.0, 1.0, 0.1, 2, 9.0)
    bad = paired_ratio([starved] * 4, [starved] * 4).line("x")
    assert run_all.parse_ratio(bad)[4].startswith("unstable(")
    # an old-style line still parses, without an interval
    assert run_all.parse_ratio("RATIO data_vs_naive_320 2.50") == (
        "data_vs_naive_320", "2.50", "", "", "no interval")
    assert run_all.parse_ratio("ratio of something") is None


def test_run_all_exits_non_zero_only_on_a_benchmark_failure(tmp_path):
    """``make bench`` (``run_all.py``): an unstable or low ratio is printed with its mark and
    the run exits 0; a benchmark that fails makes it exit 1 and is named."""
    import shutil
    import subprocess

    shutil.copy(BENCH / "run_all.py", tmp_path / "run_all.py")
    (tmp_path / "bench_slow.py").write_text(
        "print('RATIO train_vs_official_x 0.200 0.050 0.900 unstable(interval ±350%)')\n"
        "print('RATIO data_vs_naive_y 0.500 0.490 0.510 ok')\n")
    run = lambda *names: subprocess.run(  # noqa: E731
        [sys.executable, str(tmp_path / "run_all.py"), *names], capture_output=True, text=True,
        timeout=120)
    ok = run()
    assert ok.returncode == 0, ok.stderr
    assert "unstable(interval ±350%)" in ok.stdout and "1 of 2 ratios are not ok" in ok.stdout
    (tmp_path / "bench_broken.py").write_text("raise SystemExit(3)\n")
    bad = run()
    assert bad.returncode == 1 and "failed: bench_broken.py" in bad.stderr
    assert "train_vs_official_x" in bad.stdout  # the other benchmark's ratios still print
    assert run("slow").returncode == 0


def test_interleave_alternates_the_order():
    calls = []

    def contender(name):
        return lambda n: calls.append((name, n)) or Window(n, 1.0, 1.0, 1, 0.0)

    out = interleave({"a": contender("a"), "b": contender("b")}, windows=3, steps=2, warmup=1)
    assert calls == [("a", 1), ("b", 1), ("a", 2), ("b", 2), ("b", 2), ("a", 2), ("a", 2),
                     ("b", 2)]
    assert [len(v) for v in out.values()] == [3, 3]


def test_local_windows_count_work():
    w = local(lambda: 2.0, threads=1)(3)
    assert w.work == 6.0 and w.wall >= 0 and w.threads == 1


def count_steps(conn, arg) -> None:
    """A worker target: steps that do ``arg`` units of work, driven through a Gate."""
    gate = Gate(conn, threads=1)
    steps = 0
    running = gate.begin()
    while running:
        steps += 1
        running = gate.after_step(arg)
    gate.finish({"steps": steps})


def fail_at_once(conn, arg) -> None:
    raise RuntimeError(f"broken contender {arg}")


def test_worker_runs_windows_in_its_own_process():
    with Worker("counter", count_steps, 3.0, timeout=60) as worker:
        first = worker.window(2)
        second = worker.window(4, "tag")
        assert (first.work, second.work) == (6.0, 12.0)
        assert worker.stop() == {"steps": 6}


def test_worker_failure_names_the_contender():
    with Worker("broken row", fail_at_once, 7, timeout=60) as worker:
        with pytest.raises(WorkerError, match="(?s)broken row failed.*broken contender 7"):
            worker.window(1)
