"""A straightforward re-implementation of the DIS reference HCE algorithm (``relax_HCE``) on top of
OpenCV (``cv2.findContours``, ``cv2.approxPolyDP``, ``cv2.erode``/``cv2.dilate``) with a per-point
Python loop, written from the algorithm's description in docs/metrics.md. Used by
``bench_metrics.py`` as the speed baseline for HCE and, under OpenCV <= 4.12, as a cross-check of
salseg's OpenCV-free HCE. Needs ``opencv-python-headless`` and scikit-image.
"""
from __future__ import annotations

import cv2
import numpy as np
from skimage.measure import label
from skimage.morphology import skeletonize

DISK1 = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=np.uint8)


def _runs(contours, mask: np.ndarray, neighbour: np.ndarray) -> tuple[list[np.ndarray], int]:
    near = cv2.dilate(neighbour.astype(np.uint8), DISK1)
    labels = label(mask)
    independent = np.ones(len(np.unique(labels)))
    independent[0] = 0
    seen = np.zeros(mask.shape)
    runs_all = []
    for contour in contours:
        runs, run = [], []
        for x, y in contour[:, 0, :]:
            if near[y, x] == 0 or seen[y, x] != 0:
                if run:
                    runs.append(run)
                    run = []
                continue
            run.append([x, y])
            seen[y, x] += 1
            independent[labels[y, x]] = 0
        if run:
            runs.append(run)
        if len(runs) > 1:
            (fx, fy), (lx, ly) = runs[0][0], runs[-1][-1]
            if max(abs(int(fx) - int(lx)), abs(int(fy) - int(ly))) == 1:
                runs[-1].extend(runs[0][::-1])
                del runs[0]
        runs_all.extend(np.array(r, dtype=np.int32)[:, None, :] for r in runs)
    return runs_all, int(np.sum(independent))


def reference_hce(pred_u8: np.ndarray, gt_u8: np.ndarray, relax: int = 5, epsilon: float = 2.0) -> int:
    gt = (gt_u8 > 128).astype(np.uint8)
    rs = (pred_u8 > 128).astype(np.uint8)
    ske = skeletonize(gt > 0)
    tp = gt & rs
    fp = rs - tp
    fn = gt - tp
    union_eroded = cv2.erode((gt | rs).astype(np.uint8), DISK1, iterations=relax)
    fp_r = np.logical_and(fp, union_eroded)
    for _ in range(relax):
        fp_r = np.logical_and(cv2.dilate(fp_r.astype(np.uint8), DISK1), gt == 0)
    fp_r = np.logical_and(fp, fp_r)
    fn_r = np.logical_and(fn, union_eroded)
    for _ in range(relax):
        fn_r = np.logical_and(cv2.dilate(fn_r.astype(np.uint8), DISK1), rs == 0)
    fn_r = np.logical_and(fn, fn_r)
    fn_r = np.logical_or(fn_r, np.logical_and(ske, tp == 0))
    total = 0
    for mask, neighbour in ((fp_r, np.logical_or(tp, fn_r)),
                            (fn_r, ~(tp.astype(bool) | fp_r | fn_r))):
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_TREE, cv2.CHAIN_APPROX_NONE)
        runs, independent = _runs(contours, mask, neighbour)
        total += sum(len(cv2.approxPolyDP(r, epsilon, False)) for r in runs) + independent
    return total
