"""Scoring a stream of (name, prediction, GT) items into dataset values, per-image rows and curves
with :class:`~salseg.metrics.SaliencyMetrics`. The same function serves folder mode (maps read from
disk) and model mode (maps produced by a model): only the iterator differs.

Predictions whose size differs from their GT are resized to the GT size first (the protocol's
bilinear resize, :func:`salseg.metrics.resize_to_gt`); a prediction whose size is the GT's transposed
is refused instead (a rotation mix-up, not a low-resolution map). HCE, the slow metric, runs in worker
processes (``workers`` > 1) on the binarised maps while the main process computes the rest.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import sys
from collections.abc import Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from salseg.metrics import SaliencyMetrics
from salseg.metrics.conventions import DEFAULT_CONVENTION
from salseg.metrics.hce import (
    HumanCorrectionEffort,
    SkeletonCache,
    binarize_for_hce,
    gt_skeleton,
    hce_parts,
)
from salseg.metrics.protocol import MapPair, resize_to_gt


@dataclass
class DatasetScores:
    """Result of :func:`score_pairs`."""

    summary: dict[str, Any]  # dataset values (SaliencyMetrics.compute() without curves)
    curves: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)  # per image, with "name"


def _hce_worker(pred_bin: np.ndarray, gt: np.ndarray, relax: int, epsilon: float,
                cache_dir: str | None) -> dict[str, int]:
    ske = SkeletonCache(cache_dir).get(gt) if cache_dir else gt_skeleton(gt)
    parts = hce_parts(pred_bin, gt, ske, relax, epsilon)
    out = dict(zip(("fp_points", "fp_indep", "fn_points", "fn_indep"), (int(v) for v in parts)))
    out["hce"] = sum(out.values())
    return out


def _as_tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))


def _pool(workers: int) -> ProcessPoolExecutor:
    # fork is cheap and safe here: workers only run numpy/scipy/scikit-image code
    method = "fork" if sys.platform.startswith("linux") else "spawn"
    return ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context(method))


def score_pairs(
    items: Iterable[tuple[str, np.ndarray | torch.Tensor, np.ndarray | torch.Tensor]],
    convention: str = DEFAULT_CONVENTION,
    groups: Iterable[str] | None = None,
    hce_binarize: str = "dis",
    skeleton_cache: str | None = None,
    workers: int = 0,
    progress: bool = True,
    desc: str = "scoring",
    total: int | None = None,
) -> DatasetScores:
    """Score (name, prediction, GT) items. Predictions: uint8 0..255 or float in [0, 1]; GT: uint8,
    bool or float in [0, 1]; (H, W) each. ``workers``: processes for HCE (0 = all cores, 1 = in
    this process)."""
    kwargs: dict[str, Any] = dict(convention=convention, hce_binarize=hce_binarize, skeleton_cache=skeleton_cache)
    if groups is not None:
        kwargs["groups"] = tuple(groups)
    metrics = SaliencyMetrics(**kwargs)
    with_hce = "hce" in metrics.metrics
    n_workers = workers if workers > 0 else (os.cpu_count() or 1)
    parallel_hce = with_hce and n_workers > 1
    hce_metric: HumanCorrectionEffort | None = metrics.metrics["hce"] if with_hce else None  # type: ignore[assignment]
    rows: list[dict[str, Any]] = []
    futures: list[Future] = []
    pool = _pool(n_workers) if parallel_hce else None
    n_resized = 0
    try:
        for name, pred, gt in tqdm(items, desc=desc, total=total, disable=not progress,
                                   unit="img", dynamic_ncols=True):
            gt_t = _as_tensor(gt)
            pred_t = _as_tensor(pred)
            if pred_t.ndim != 2 or gt_t.ndim != 2:
                raise ValueError(f"{name}: expected (H, W) maps, got {tuple(pred_t.shape)} and "
                                 f"{tuple(gt_t.shape)}")
            resized = tuple(pred_t.shape) != tuple(gt_t.shape)
            if resized and tuple(pred_t.shape) == tuple(gt_t.shape)[::-1]:
                raise ValueError(f"{name}: the prediction is {tuple(pred_t.shape)} and the GT "
                                 f"{tuple(gt_t.shape)} (H, W): transposed, not just smaller (an "
                                 "EXIF orientation mix-up?); refusing to stretch it")
            if resized:
                pred_t = resize_to_gt(pred_t, tuple(gt_t.shape))
                n_resized += 1
            pair = MapPair(pred_t, gt_t)
            if parallel_hce:
                assert pool is not None and hce_metric is not None
                futures.append(pool.submit(
                    _hce_worker, binarize_for_hce(pair, hce_binarize), pair.gt.cpu().numpy(),
                    hce_metric.relax, hce_metric.epsilon, skeleton_cache))
                row = metrics.update_pair(pair, skip=("hce",))
            else:
                row = metrics.update_pair(pair)
            rows.append({"name": name, "height": pair.shape[0], "width": pair.shape[1],
                         "resized": resized, **row})
        if parallel_hce:
            for row, fut in tqdm(zip(rows, futures), desc="HCE", total=len(futures),
                                 disable=not progress, unit="img", dynamic_ncols=True):
                parts = fut.result()
                metrics.accumulate("hce", HumanCorrectionEffort.score_from_parts(parts))
                row["hce"] = float(parts["hce"])
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    result = metrics.compute()
    curves = result.pop("curves")
    result["n_resized"] = n_resized
    return DatasetScores(summary=result, curves=curves, rows=rows)
