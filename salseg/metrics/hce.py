"""Human Correction Efforts, HCE (Qin et al., "Highly Accurate Dichotomous Image Segmentation",
ECCV 2022, sec. 3.3), exactly as the DIS reference ``relax_HCE`` (relax = 5, epsilon = 2.0)
computes it with OpenCV 4.12 - but without OpenCV: contours come from
:mod:`salseg.metrics.contours` and polygon simplification from :mod:`salseg.metrics.polygon`,
both reproducing OpenCV <= 4.12, so the values do not change when a dependency is upgraded.

Per image (docs/metrics.md, "HCE"):

1. ``gt = g > 128``; prediction ``p > 128`` on raw 8-bit values (``binarize="dis"``, default) or
   ``minmax(p) > 0.5`` (``binarize="pysodmetrics"``); skeleton = ``skeletonize(gt)`` (scikit-image).
2. TP, FP, FN; the union eroded 5 times with the 3 x 3 cross (outside of the image ignored).
   Relaxed FP = FP inside the eroded union, grown back 5 times by a cross dilation restricted to
   ``~gt``, then restricted to FP; relaxed FN likewise with ``~pred``, plus skeleton pixels not
   covered by TP.
3. The contours of each relaxed map are walked in OpenCV's order; consecutive contour points that
   touch (after one cross dilation) the "neighbour" region - TP | FN_ for FP, ~(TP | FP_ | FN_) for
   FN - and were not visited before form runs (the last run is joined to the first when their
   ends are 8-adjacent); every run costs the number of vertices of its RDP simplification
   (epsilon 2, open curve); each connected component (8-connectivity) with no run costs 1.
4. HCE = FP points + FP components + FN points + FN components; dataset = mean over images.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from salseg.atomic import atomic_output
from salseg.metrics.base import PairScore, SumMetric
from salseg.metrics.contours import find_contours
from salseg.metrics.polygon import approx_poly_dp_open
from salseg.metrics.protocol import MapPair

CROSS = ndimage.generate_binary_structure(2, 1)  # skimage.morphology.disk(1)
SQUARE = np.ones((3, 3), dtype=bool)
BINARIZATIONS = ("dis", "pysodmetrics")


def gt_skeleton(gt: np.ndarray) -> np.ndarray:
    """``skimage.morphology.skeletonize`` of the binary GT (as DIS ``compute_hce`` does)."""
    from skimage.morphology import skeletonize

    return skeletonize(np.asarray(gt, dtype=bool))


class SkeletonCache:
    """On-disk cache of GT skeletons (skeletons of large masks are slow), keyed by a hash of the
    binary GT; files are written atomically as packed bits."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def _path(self, gt: np.ndarray) -> Path:
        h = hashlib.sha1(np.packbits(gt).tobytes())
        h.update(str(gt.shape).encode())
        return self.directory / f"{h.hexdigest()}.npy"

    def get(self, gt: np.ndarray) -> np.ndarray:
        gt = np.asarray(gt, dtype=bool)
        path = self._path(gt)
        if path.exists():
            try:
                bits = np.load(path)
                return np.unpackbits(bits, count=gt.size).reshape(gt.shape).astype(bool)
            except (OSError, ValueError) as err:
                raise ValueError(f"skeleton cache file {path} is unreadable ({err}); delete it") from err
        ske = gt_skeleton(gt)
        with atomic_output(path, overwrite=True) as tmp, open(tmp, "wb") as fh:
            np.save(fh, np.packbits(ske))
        return ske


def _erode(mask: np.ndarray, iterations: int) -> np.ndarray:
    # cv2.erode's default border is the maximum value: the outside never erodes
    return ndimage.binary_erosion(mask, CROSS, iterations=iterations, border_value=1)


def _dilate(mask: np.ndarray) -> np.ndarray:
    return ndimage.binary_dilation(mask, CROSS, border_value=0)


def _count_points_and_regions(mask: np.ndarray, neighbour: np.ndarray, epsilon: float) -> tuple[
    int, int
]:
    """Polygon control points of the boundary runs of ``mask`` touching ``neighbour`` and the
    number of connected components of ``mask`` without such a run (DIS ``filter_bdy_cond`` +
    ``approximate_RDP``)."""
    near = _dilate(neighbour)
    labels, n_comp = ndimage.label(mask, structure=SQUARE)
    touched = np.zeros(n_comp + 1, dtype=bool)
    h, w = mask.shape
    visited = np.zeros(h * w, dtype=bool)
    near_flat = near.reshape(-1)
    labels_flat = labels.reshape(-1)
    points = 0
    contours, _ = find_contours(mask)
    for contour in contours:
        flat = contour[:, 1].astype(np.int64) * w + contour[:, 0]
        _, first = np.unique(flat, return_index=True)
        is_first = np.zeros(len(flat), dtype=bool)
        is_first[first] = True
        accepted = near_flat[flat] & is_first & ~visited[flat]
        if not accepted.any():
            continue
        visited[flat[accepted]] = True
        touched[labels_flat[flat[accepted]]] = True
        # maximal runs of consecutive accepted points
        edges = np.diff(np.concatenate([[0], accepted.astype(np.int8), [0]]))
        starts = np.flatnonzero(edges == 1)
        ends = np.flatnonzero(edges == -1)
        runs = [contour[s:e] for s, e in zip(starts, ends)]
        if len(runs) > 1:
            fx, fy = runs[0][0]
            lx, ly = runs[-1][-1]
            if abs(int(fx) - int(lx)) <= 1 and abs(int(fy) - int(ly)) <= 1:
                runs[-1] = np.concatenate([runs[-1], runs[0][::-1]])
                del runs[0]
        for run in runs:
            points += len(approx_poly_dp_open(run, epsilon))
    has_background = bool((~mask).any())
    regions = int(n_comp - touched[1:].sum()) if has_background else 0
    return points, regions


def hce_parts(pred_bin: np.ndarray, gt: np.ndarray, skeleton: np.ndarray, relax: int = 5,
              epsilon: float = 2.0) -> tuple[int, int, int, int]:
    """(FP points, FP independent regions, FN points, FN independent regions) of one image."""
    pred_bin = np.asarray(pred_bin, dtype=bool)
    gt = np.asarray(gt, dtype=bool)
    if pred_bin.shape != gt.shape or skeleton.shape != gt.shape:
        raise ValueError(
            f"HCE: shapes differ (pred {pred_bin.shape}, gt {gt.shape}, skeleton {skeleton.shape})"
        )
    tp = gt & pred_bin
    fp = pred_bin & ~tp
    fn = gt & ~tp
    union_eroded = _erode(gt | pred_bin, relax)
    fp_r = fp & union_eroded
    for _ in range(relax):
        fp_r = _dilate(fp_r) & ~gt
    fp_r = fp & fp_r
    fn_r = fn & union_eroded
    for _ in range(relax):
        fn_r = _dilate(fn_r) & ~pred_bin
    fn_r = fn & fn_r
    fn_r = fn_r | (skeleton & ~tp)
    fp_points, fp_regions = _count_points_and_regions(fp_r, tp | fn_r, epsilon)
    fn_points, fn_regions = _count_points_and_regions(fn_r, ~(tp | fp_r | fn_r), epsilon)
    return fp_points, fp_regions, fn_points, fn_regions


def binarize_for_hce(pair: MapPair, binarize: str = "dis") -> np.ndarray:
    """The prediction mask HCE scores: raw ``p > 128`` (DIS) or ``minmax(p) > 0.5`` (pysodmetrics)."""
    if binarize == "dis":
        return (pair.p255 > 128).cpu().numpy()
    if binarize == "pysodmetrics":
        return (pair.p_norm > 0.5).cpu().numpy()
    raise ValueError(f"HCE binarize must be one of {BINARIZATIONS}, got {binarize!r}")


def hce_of_pair(pair: MapPair, binarize: str = "dis", relax: int = 5, epsilon: float = 2.0,
                skeleton_cache: SkeletonCache | None = None) -> dict[str, int]:
    """HCE and its four parts for one pair."""
    gt = pair.gt.cpu().numpy()
    ske = skeleton_cache.get(gt) if skeleton_cache is not None else gt_skeleton(gt)
    parts = hce_parts(binarize_for_hce(pair, binarize), gt, ske, relax, epsilon)
    keys = ("fp_points", "fp_indep", "fn_points", "fn_indep")
    out = dict(zip(keys, (int(v) for v in parts)))
    out["hce"] = sum(parts)
    return out


class HumanCorrectionEffort(SumMetric):
    """HCE (mean over images) and the means of its four parts. ``compute()`` keys: ``hce``,
    ``fp_points``, ``fp_indep``, ``fn_points``, ``fn_indep``. Runs on CPU (numpy)."""

    SUM_STATES = {
        "sum_hce": (),
        "sum_fp_points": (),
        "sum_fp_indep": (),
        "sum_fn_points": (),
        "sum_fn_indep": (),
    }
    higher_is_better = False

    def __init__(self, binarize: str = "dis", relax: int = 5, epsilon: float = 2.0,
                 skeleton_cache: str | os.PathLike | None = None, **kwargs: Any) -> None:
        if binarize not in BINARIZATIONS:
            raise ValueError(f"HCE binarize must be one of {BINARIZATIONS}, got {binarize!r}")
        super().__init__(**kwargs)
        self.binarize = binarize
        self.relax = relax
        self.epsilon = epsilon
        self.skeleton_cache = SkeletonCache(skeleton_cache) if skeleton_cache else None

    def score_pair(self, pair: MapPair) -> PairScore:
        r = hce_of_pair(pair, self.binarize, self.relax, self.epsilon, self.skeleton_cache)
        return self.score_from_parts(r)

    @staticmethod
    def score_from_parts(r: dict[str, int]) -> PairScore:
        """The contribution of an image whose HCE was computed elsewhere (e.g. in a worker)."""
        sums = {f"sum_{k}": float(v) for k, v in r.items()}
        return PairScore(sums, {"hce": float(r["hce"])})

    def compute(self) -> dict[str, torch.Tensor]:
        return {k: self._mean(f"sum_{k}") for k in ("hce", "fp_points", "fp_indep", "fn_points",
                                                     "fn_indep")}
