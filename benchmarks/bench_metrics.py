"""Speed of salseg's metrics against pysodmetrics (single process, CPU) and of salseg's HCE (worker
processes, no OpenCV) against a straightforward re-implementation of the DIS reference algorithm
on top of OpenCV (``hce_opencv_reference.py``, one process, like DIS's ``compute_hce``).

Set: maxF curve (F-measure), MAE, weighted F, S-measure, E-measure on 300 pairs at 400x300 and 50
at 1024x1024 (``--quick``: 60 and 8); HCE on 24 DIS-like pairs at 1024x768 (``--quick``: 6). The
values of both sides are compared as well (maximum absolute difference over the windows printed).
The sets are cut into windows of a few pairs; the two sides take turns window by window, the
order alternating, and a ratio is the median of the paired per-window ratios (reference time /
salseg time) with a 95 % bootstrap interval and a mark (``timing.paired_ratio``).

Prints ``RATIO metrics_vs_pysodmetrics x low high mark`` (over the windows of both sets) and
``RATIO hce_vs_reference x low high mark`` (salseg's worker pool, started in every window, vs
the reference in one process).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))

from timing import Window, cpu_seconds, load_average, paired_ratio  # noqa: E402

from salseg.metrics import MAE, EMeasure, FMeasureMeanCurve, MapPair, SMeasure, WeightedFMeasure  # noqa: E402
from salseg.metrics.hce import binarize_for_hce  # noqa: E402


def saliency_pair(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """An object mask (ellipses) and a soft, shifted, noisy prediction of it."""
    yy, xx = np.mgrid[:h, :w]
    gt = np.zeros((h, w), bool)
    for _ in range(int(rng.integers(1, 4))):
        cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
        ry, rx = rng.uniform(0.08, 0.3) * h, rng.uniform(0.08, 0.3) * w
        gt |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
    shifted = np.roll(gt, (int(rng.integers(-6, 7)), int(rng.integers(-6, 7))), axis=(0, 1))
    soft = ndimage.gaussian_filter(shifted.astype(float), rng.uniform(1, 5))
    soft = 0.85 * soft + rng.uniform(0, 0.25) * rng.random((h, w))
    return (np.clip(soft, 0, 1) * 255).astype(np.uint8), gt.astype(np.uint8) * 255


def dis_like_pair(rng: np.random.Generator, h: int = 768, w: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Thin structures (1-3 px lines) plus solid parts, and a prediction missing some of them."""
    gt = np.zeros((h, w), bool)
    pred = np.zeros((h, w), bool)
    for _ in range(int(rng.integers(15, 40))):
        y0, x0, y1, x1 = rng.integers(0, h), rng.integers(0, w), rng.integers(0, h), rng.integers(0, w)
        n = int(max(abs(y1 - y0), abs(x1 - x0))) + 1
        ys = np.linspace(y0, y1, n).round().astype(int)
        xs = np.linspace(x0, x1, n).round().astype(int)
        line = np.zeros((h, w), bool)
        line[ys, xs] = True
        line = ndimage.binary_dilation(line, iterations=int(rng.integers(0, 2)))
        gt |= line
        if rng.random() < 0.8:
            pred |= np.roll(line, int(rng.integers(-1, 2)), axis=1)
    yy, xx = np.mgrid[:h, :w]
    for _ in range(3):
        blob = ((yy - rng.uniform(0, h)) / 60) ** 2 + ((xx - rng.uniform(0, w)) / 90) ** 2 < 1
        gt |= blob
        pred |= ndimage.binary_dilation(blob, iterations=2)
    soft = ndimage.gaussian_filter(pred.astype(float), 0.8)
    return (np.clip(soft, 0, 1) * 255).astype(np.uint8), gt.astype(np.uint8) * 255


def run_salseg(pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, dict[str, float]]:
    metrics = {"maxF": FMeasureMeanCurve(), "MAE": MAE(), "wF": WeightedFMeasure(),
               "S": SMeasure(), "E": EMeasure()}
    start = time.perf_counter()
    for pred, gt in pairs:
        pair = MapPair(torch.from_numpy(pred), torch.from_numpy(gt))
        for m in metrics.values():
            m.accumulate(m.score_pair(pair))
    elapsed = time.perf_counter() - start
    values = {"maxF": float(metrics["maxF"].compute()["max_f"]), "MAE": float(metrics["MAE"].compute()),
              "wF": float(metrics["wF"].compute()), "S": float(metrics["S"].compute()),
              "E": float(metrics["E"].compute()["mean_em"])}
    return elapsed, values


def run_pysodmetrics(pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, dict[str, float]]:
    import py_sod_metrics as psm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fm = psm.Fmeasure()
    mae, wfm, sm, em = psm.MAE(), psm.WeightedFmeasure(), psm.Smeasure(), psm.Emeasure()
    start = time.perf_counter()
    for pred, gt in pairs:
        for m in (fm, mae, wfm, sm, em):
            m.step(pred, gt)
    elapsed = time.perf_counter() - start
    values = {"maxF": float(fm.get_results()["fm"]["curve"].max()), "MAE": float(mae.get_results()["mae"]),
              "wF": float(wfm.get_results()["wfm"]), "S": float(sm.get_results()["sm"]),
              "E": float(em.get_results()["em"]["curve"].mean())}
    return elapsed, values


def _hce_job(args: tuple[np.ndarray, np.ndarray]) -> int:
    from salseg.metrics.hce import gt_skeleton, hce_parts

    pred_bin, gt = args
    return sum(hce_parts(pred_bin, gt, gt_skeleton(gt)))


def bench_hce(pairs: list[tuple[np.ndarray, np.ndarray]], reference: bool = True
              ) -> tuple[float, float | None, list, list]:
    jobs = []
    for pred, gt in pairs:
        pair = MapPair(torch.from_numpy(pred), torch.from_numpy(gt))
        jobs.append((binarize_for_hce(pair, "dis"), pair.gt_np))
    workers = os.cpu_count() or 1
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=workers) as pool:
        ours = list(pool.map(_hce_job, jobs))
    t_ours = time.perf_counter() - start
    if not reference:
        return t_ours, None, ours, []
    try:
        from hce_opencv_reference import reference_hce
    except ImportError:  # no OpenCV: no baseline
        return t_ours, None, ours, []
    start = time.perf_counter()
    ref = [reference_hce(pred, gt) for pred, gt in pairs]
    return t_ours, time.perf_counter() - start, ours, ref


def timed(fn, chunk, threads: int = 1, children: bool = False):
    """``fn(chunk)`` as one window (its own elapsed time), and what it returned."""
    c0 = cpu_seconds(children)
    elapsed, values = fn(chunk)
    return Window(len(chunk), elapsed, cpu_seconds(children) - c0, threads, load_average()), values


def chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller set (under a minute)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="times every window of the sets is run per side (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    n_small, n_large, n_hce = (60, 8, 6) if args.quick else (300, 50, 24)
    sets = {
        f"{n_small} x 400x300": [saliency_pair(rng, 300, 400) for _ in range(n_small)],
        f"{n_large} x 1024x1024": [saliency_pair(rng, 1024, 1024) for _ in range(n_large)],
    }
    run_salseg(sets[next(iter(sets))][:2])  # warm-up (tables, imports)
    print(f"{'set':<18} {'windows':>7} {'pysodmetrics s':>15} {'salseg s':>10} {'max |diff|':>11}")
    ours_w: list[Window] = []
    ref_w: list[Window] = []
    for name, pairs in sets.items():
        size = max(1, len(pairs) // 6) if len(pairs) >= 12 else 2
        diff, n0 = 0.0, len(ours_w)
        for k, chunk in enumerate(chunks(pairs, size) * args.repeats):
            sides = [("ref", run_pysodmetrics), ("ours", run_salseg)]
            for side, fn in (sides if k % 2 == 0 else sides[::-1]):
                w, v = timed(fn, chunk)
                (ref_w if side == "ref" else ours_w).append(w)
                if side == "ref":
                    v_ref = v
                else:
                    v_ours = v
            diff = max(diff, max(abs(v_ref[m] - v_ours[m]) for m in v_ref))
        t_ref = sum(w.wall for w in ref_w[n0:])
        t_ours = sum(w.wall for w in ours_w[n0:])
        print(f"{name:<18} {len(ours_w) - n0:>7} {t_ref:>15.3f} {t_ours:>10.3f} {diff:>11.2e}")
    metrics_ratio = paired_ratio(ours_w, ref_w)

    hce_pairs = [dis_like_pair(rng) for _ in range(n_hce)]
    try:
        from hce_opencv_reference import reference_hce
    except ImportError:  # no OpenCV: no baseline
        reference_hce = None

    def ours_fn(c):
        t, _, values, _ = bench_hce(c, reference=False)
        return t, values

    def ref_fn(c):
        start = time.perf_counter()
        values = [reference_hce(pred, gt) for pred, gt in c]
        return time.perf_counter() - start, values

    hce_ours: list[Window] = []
    hce_ref: list[Window] = []
    same = total = 0
    t_ref = None
    for k, chunk in enumerate(chunks(hce_pairs, 2)):
        got = {}
        order = ["ours", "ref"] if k % 2 == 0 else ["ref", "ours"]
        for side in order:
            if side == "ours":
                w, got["ours"] = timed(ours_fn, chunk, threads=os.cpu_count() or 1, children=True)
                hce_ours.append(w)
            elif reference_hce is not None:
                w, got["ref"] = timed(ref_fn, chunk)
                hce_ref.append(w)
        if "ref" in got:
            same += sum(a == b for a, b in zip(got["ours"], got["ref"]))
            total += len(got["ref"])
            t_ref = sum(x.wall for x in hce_ref)
    t_ours = sum(x.wall for x in hce_ours)
    print(f"\nHCE on {n_hce} DIS-like pairs at 1024x768, windows of 2 pairs: salseg {t_ours:.2f} s "
          f"({os.cpu_count()} worker processes, no OpenCV)", end="")
    if t_ref is None:
        print("; reference skipped (OpenCV not installed)")
    else:
        import cv2

        print(f"; reference (OpenCV {cv2.__version__}, 1 process) {t_ref:.2f} s; equal values on "
              f"{same}/{total} pairs (OpenCV >= 4.13 simplifies open curves differently, so "
              "differences are expected there; salseg reproduces 4.12)")
    print(f"(metrics_vs_pysodmetrics: {metrics_ratio.describe()})")
    print(metrics_ratio.line("metrics_vs_pysodmetrics"))
    if t_ref is not None:
        hce_ratio = paired_ratio(hce_ours, hce_ref)
        print(f"(hce_vs_reference: {hce_ratio.describe()})")
        print(hce_ratio.line("hce_vs_reference"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
