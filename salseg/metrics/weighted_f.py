"""Weighted F-measure (Margolin, Zelnik-Manor and Tal, CVPR 2014) with beta^2 = 1, as the
reference MATLAB code and pysodmetrics compute it (docs/metrics.md, "Weighted F-measure").

``E = |p - g|``; every background pixel takes the error of its nearest foreground pixel (the
Euclidean feature transform of ``scipy.ndimage.distance_transform_edt``, whose tie-breaking the
reference uses), which is then blurred with MATLAB's ``fspecial('gaussian', 7, 5)`` (zero padding);
foreground errors are replaced by the blurred ones where those are smaller; background errors are
weighted by ``2 - exp(log(0.5) / 5 * distance)``. ``Q = 2 R P / (R + P + eps)``; an empty GT
scores 0.

Computed on the CPU in numpy without the full feature transform: the exact distances come from
OpenCV's exact Euclidean distance transform (scipy's when OpenCV is missing); the nearest GT pixel
is only needed for background pixels within 3 px (Chebyshev) of the GT - the only ones the 7 x 7
blur at GT pixels reads - and is found by scanning offsets in scipy's tie-break order (distance,
then smaller x, then smaller y), which reproduces scipy's choice exactly; the blur is separable.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy import ndimage

from salseg.metrics.base import PairScore, SumMetric
from salseg.metrics.protocol import MapPair

EPS = 2.220446049250313e-16  # numpy.spacing(1)


def matlab_gaussian_kernel_1d(size: int = 7, sigma: float = 5.0) -> np.ndarray:
    """The 1-D factor of MATLAB ``fspecial('gaussian', size, sigma)`` (which is its outer product
    with itself: no entry falls under fspecial's ``eps * max`` cut for these sizes)."""
    ax = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(ax**2) / (2 * sigma * sigma))
    return g / g.sum()


_KERNEL_1D = matlab_gaussian_kernel_1d()
_BAND_D2 = 18  # bg pixels within Chebyshev distance 3 of the GT have squared distance <= 18
_FAR_D2 = 270 * 270  # beyond d = 270, 2 - 0.5 ** (d / 5) == 2.0 exactly in float64


def _band_offsets() -> np.ndarray:
    """Offsets (dy, dx) with dy^2 + dx^2 <= 18, in the order in which scipy's feature transform
    breaks ties among equidistant foreground pixels: distance, then smaller x, then smaller y."""
    r = 5
    offs = [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1)
            if 0 < dy * dy + dx * dx <= _BAND_D2]
    offs.sort(key=lambda o: (o[0] ** 2 + o[1] ** 2, o[1], o[0]))
    return np.array(offs, dtype=np.int64)


_OFFSETS = _band_offsets()


def distance_to_foreground(gt: np.ndarray) -> np.ndarray:
    """Euclidean distance of every pixel to the nearest GT pixel as float32 (0 on the GT): OpenCV's
    exact (``DIST_MASK_PRECISE``) transform when available, scipy's otherwise. Exact squared
    distances are recovered with ``rint(d * d)`` (float32 keeps 24 bits)."""
    try:
        import cv2
    except ImportError:  # pragma: no cover - OpenCV is normally installed (albumentations)
        return ndimage.distance_transform_edt(~gt).astype(np.float32)
    return cv2.distanceTransform((~gt).view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)


def _decay_table() -> np.ndarray:
    """``0.5 ** (d / 5)`` as pysodmetrics computes it (``exp(log(0.5) / 5 * d)``, d the float64
    ``sqrt`` of the integer squared distance) for every squared distance up to the far limit;
    the entry after it is 0 (there ``2 - decay`` is exactly 2.0 in float64)."""
    d2 = np.arange(_FAR_D2 + 2, dtype=np.float64)
    table = np.exp(math.log(0.5) / 5 * np.sqrt(d2))
    table[-1] = 0.0
    return table


_DECAY: np.ndarray | None = None


def _decay() -> np.ndarray:
    global _DECAY
    if _DECAY is None:
        _DECAY = _decay_table()
    return _DECAY


def _nearest_gt(gt: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """Flat index of the GT pixel nearest to each of the given (flat) background pixels, which lie
    within squared distance 18 of the GT, chosen as scipy's feature transform chooses among
    equidistant pixels (offsets scanned in tie-break order; most pixels are settled by the
    first few offsets)."""
    h, w = gt.shape
    pad = 5
    wp = w + 2 * pad
    gt_pad = np.zeros((h + 2 * pad, wp), dtype=bool)
    gt_pad[pad:-pad, pad:-pad] = gt
    flat_pad = gt_pad.reshape(-1)
    py, px = np.divmod(pixels, w)
    pos = (py + pad) * wp + (px + pad)
    found = np.empty(len(pixels), dtype=np.int64)
    todo = np.arange(len(pixels))
    for dy, dx in _OFFSETS:
        hit = flat_pad[pos[todo] + (dy * wp + dx)]
        if hit.any():
            done = todo[hit]
            found[done] = pixels[done] + (dy * w + dx)
            todo = todo[~hit]
            if not todo.size:
                break
    if todo.size:  # pragma: no cover - callers only pass pixels within the band
        raise RuntimeError("weighted F: band pixel without a GT pixel within its radius")
    return found


def weighted_fmeasure(pair: MapPair, beta2: float = 1.0) -> float:
    """Weighted F-measure of a pair (pysodmetrics' normalisation of the prediction)."""
    gt = pair.gt_np
    n_fg = pair.n_fg
    if n_fg == 0:
        return 0.0
    h, w = gt.shape
    lut = pair.lut_p_norm
    p8 = pair.p8_np
    dist = distance_to_foreground(gt)
    # background: E = p, weight 2 - 0.5 ** (d / 5) (exactly 2.0 beyond d = 266), so
    # sum(E * weight) = 2 sum(p) - sum(p * 0.5 ** (d / 5)); GT pixels (d = 0, decay 1) are
    # taken out of the second sum with sum(p) over the GT
    d2 = dist * dist
    np.rint(d2, out=d2)  # exact integers (float32 holds them)
    np.minimum(d2, _FAR_D2 + 1, out=d2)
    decay = _decay()[d2.astype(np.int32)]
    decay_by_value = np.bincount(p8.reshape(-1), weights=decay.reshape(-1), minlength=256)
    sum_p_bg = float(np.dot(pair.hist[0], lut))
    sum_p_fg = float(np.dot(pair.hist[1], lut))
    fpw = 2 * sum_p_bg - (float(np.dot(decay_by_value, lut)) - sum_p_fg)
    # GT pixels: E = 1 - p, possibly replaced by the blurred E (7 x 7 MATLAB Gaussian), where the
    # blur reads background pixels within 3 px carrying E of their nearest GT pixel
    ys, xs = np.flatnonzero(gt.any(1)), np.flatnonzero(gt.any(0))
    y0, y1 = max(int(ys[0]) - 3, 0), min(int(ys[-1]) + 4, h)
    x0, x1 = max(int(xs[0]) - 3, 0), min(int(xs[-1]) + 4, w)
    gt_box = gt[y0:y1, x0:x1]
    bh, bw = gt_box.shape
    # zero border: the image's zero padding where the box touches the image edge; elsewhere it
    # only changes blurred values within 3 px of the box edge, which are not GT pixels
    err_t = np.zeros((bh + 6, bw + 6))
    inner = err_t[3:-3, 3:-3]
    err_box = 1 - lut[p8[y0:y1, x0:x1]]
    inner[gt_box] = err_box[gt_box]
    d_box = dist[y0:y1, x0:x1]
    band = np.flatnonzero((d_box > 0) & (d_box * d_box <= _BAND_D2 + 0.5))
    if band.size:
        by, bx = np.divmod(band, bw)  # ``inner`` is a strided view: index it in 2-D
        inner[by, bx] = err_box.reshape(-1)[_nearest_gt(gt_box, band)]
    blurred = ndimage.correlate1d(err_t, _KERNEL_1D, axis=0, mode="constant", cval=0.0)
    blurred = ndimage.correlate1d(blurred, _KERNEL_1D, axis=1, mode="constant", cval=0.0)
    err_fg = err_box[gt_box]
    blur_fg = blurred[3:-3, 3:-3][gt_box]
    ew_fg = np.where(blur_fg < err_fg, blur_fg, err_fg)
    sum_fg = float(ew_fg.sum())
    tpw = n_fg - sum_fg
    recall = 1 - sum_fg / n_fg
    precision = tpw / (tpw + fpw + EPS)
    return (1 + beta2) * recall * precision / (recall + beta2 * precision + EPS)


class WeightedFMeasure(SumMetric):
    """Weighted F-measure (beta^2 = 1); ``compute()`` returns the mean over images."""

    SUM_STATES = {"sum_wf": ()}
    higher_is_better = True

    def score_pair(self, pair: MapPair) -> PairScore:
        value = weighted_fmeasure(pair)
        return PairScore({"sum_wf": value}, {"wf": value})

    def compute(self) -> torch.Tensor:
        return self._mean("sum_wf")



