"""Speed of salseg's metrics against pysodmetrics (single process, CPU) and of salseg's HCE (worker
processes, no OpenCV) against a straightforward re-implementation of the DIS reference algorithm
on top of OpenCV (``hce_opencv_reference.py``, one process, like DIS's ``compute_hce``).

Set: maxF curve (F-measure), MAE, weighted F, S-measure, E-measure on 300 pairs at 400x300 and 50
at 1024x1024 (``--quick``: 60 and 8); HCE on 24 DIS-like pairs at 1024x768 (``--quick``: 6). The
values of both sides are compared as well (maximum absolute difference printed). Both sides run
``--repeats`` times, alternating, and each side's best time counts.

Prints ``RATIO metrics_vs_pysodmetrics <x>`` (pysodmetrics time / salseg time over the whole set)
and ``RATIO hce_vs_reference <x>`` (reference time / salseg time).
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


def bench_hce(pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, float | None, list, list]:
    jobs = []
    for pred, gt in pairs:
        pair = MapPair(torch.from_numpy(pred), torch.from_numpy(gt))
        jobs.append((binarize_for_hce(pair, "dis"), pair.gt_np))
    workers = os.cpu_count() or 1
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=workers) as pool:
        ours = list(pool.map(_hce_job, jobs))
    t_ours = time.perf_counter() - start
    try:
        from hce_opencv_reference import reference_hce
    except ImportError:  # no OpenCV: no baseline
        return t_ours, None, ours, []
    start = time.perf_counter()
    ref = [reference_hce(pred, gt) for pred, gt in pairs]
    return t_ours, time.perf_counter() - start, ours, ref


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller set (under a minute)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per side; the best counts")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    n_small, n_large, n_hce = (60, 8, 6) if args.quick else (300, 50, 24)
    sets = {
        f"{n_small} x 400x300": [saliency_pair(rng, 300, 400) for _ in range(n_small)],
        f"{n_large} x 1024x1024": [saliency_pair(rng, 1024, 1024) for _ in range(n_large)],
    }
    run_salseg(sets[next(iter(sets))][:2])  # warm-up (tables, imports)
    print(f"{'set':<18} {'pysodmetrics s':>15} {'salseg s':>10} {'ratio':>7} {'max |diff|':>11}")
    total_ref = total_ours = 0.0
    for name, pairs in sets.items():
        # alternate the two sides and keep each one's best time (robust on a busy machine)
        t_ref = t_ours = float("inf")
        for _ in range(args.repeats):
            t, v_ref = run_pysodmetrics(pairs)
            t_ref = min(t_ref, t)
            t, v_ours = run_salseg(pairs)
            t_ours = min(t_ours, t)
        diff = max(abs(v_ref[k] - v_ours[k]) for k in v_ref)
        total_ref += t_ref
        total_ours += t_ours
        print(f"{name:<18} {t_ref:>15.3f} {t_ours:>10.3f} {t_ref / t_ours:>7.2f} {diff:>11.2e}")
        print("   values (salseg): " + ", ".join(f"{k} {v:.4f}" for k, v in v_ours.items()))
    print(f"{'all':<18} {total_ref:>15.3f} {total_ours:>10.3f} {total_ref / total_ours:>7.2f}")

    hce_pairs = [dis_like_pair(rng) for _ in range(n_hce)]
    t_ours, t_ref, ours, ref = bench_hce(hce_pairs)
    print(f"\nHCE on {n_hce} DIS-like pairs at 1024x768: salseg {t_ours:.2f} s "
          f"({os.cpu_count()} worker processes, no OpenCV)", end="")
    if t_ref is None:
        print("; reference skipped (OpenCV not installed)")
    else:
        import cv2

        same = sum(a == b for a, b in zip(ours, ref))
        print(f"; reference (OpenCV {cv2.__version__}, 1 process) {t_ref:.2f} s; equal values on "
              f"{same}/{len(ref)} pairs (OpenCV >= 4.13 simplifies open curves differently, so "
              "differences are expected there; salseg reproduces 4.12)")
    print(f"RATIO metrics_vs_pysodmetrics {total_ref / total_ours:.2f}")
    if t_ref is not None:
        print(f"RATIO hce_vs_reference {t_ref / t_ours:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
