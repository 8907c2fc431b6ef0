"""S-measure, the structure measure (Fan et al., ICCV 2017), alpha = 0.5, as pysodmetrics computes
it (docs/metrics.md, "S-measure"): object part with std of ddof 1 (0 for a single pixel), region
part split at the GT centroid (``round`` half to even, +1 as in MATLAB) into four area-weighted
blocks scored with the SSIM-like formula; ``1 - mean(p)`` for an empty GT, ``mean(p)`` for a full
one; clipped at 0. Computed from the value histograms of the four blocks (float64); an empty block
(weight 0) contributes 0.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from salseg.metrics.base import PairScore, SumMetric
from salseg.metrics.protocol import MapPair

EPS = 2.220446049250313e-16  # numpy.spacing(1)


def _object_score(values: np.ndarray, counts: np.ndarray) -> float:
    """``2 mean / (mean^2 + 1 + std + eps)`` of the values with the given counts (std ddof 1,
    0 for a single pixel)."""
    n = float(counts.sum())
    mean = float(np.dot(counts, values)) / n
    std = math.sqrt(float(np.dot(counts, (values - mean) ** 2)) / (n - 1)) if n > 1 else 0.0
    return 2 * mean / (mean**2 + 1 + std + EPS)


def _block_ssim(values: np.ndarray, hist: np.ndarray) -> float:
    """The region part's SSIM-like score of one block from its (2, 256) value histograms."""
    n0, n1 = float(hist[0].sum()), float(hist[1].sum())
    n = n0 + n1
    if n == 0:  # empty block (weight 0); pysodmetrics would produce NaN here
        return 0.0
    counts = hist[0] + hist[1]
    x = float(np.dot(counts, values)) / n
    y = n1 / n
    dev = values - x
    sigma_x = float(np.dot(counts, dev**2)) / (n - 1 + EPS)
    sigma_y = (n1 * (1 - y) ** 2 + n0 * y**2) / (n - 1 + EPS)
    sigma_xy = (float(np.dot(hist[1], dev)) * (1 - y) - float(np.dot(hist[0], dev)) * y) / (n - 1 + EPS)
    alpha = 4 * x * y * sigma_xy
    beta = (x**2 + y**2) * (sigma_x + sigma_y)
    if alpha != 0:
        return alpha / (beta + EPS)
    return 1.0 if beta == 0 else 0.0


def s_measure(pair: MapPair, alpha: float = 0.5) -> float:
    """S-measure of a pair (pysodmetrics' normalisation of the prediction)."""
    h, w = pair.shape
    area = h * w
    values, hist = pair.lut_p_norm, pair.hist
    y = pair.n_fg / area
    if y == 0:
        return 1 - float(np.dot(hist.sum(0), values)) / area
    if y == 1:
        return float(np.dot(hist.sum(0), values)) / area
    obj = _object_score(values, hist[1]) * y + _object_score(1 - values, hist[0]) * (1 - y)
    cy, cx = pair.centroid
    w_lt = cx * cy / area
    w_rt = cy * (w - cx) / area
    w_lb = (h - cy) * cx / area
    w_rb = 1 - w_lt - w_rt - w_lb
    blocks = pair.block_hists
    region = sum(_block_ssim(values, blocks[k]) * wk for k, wk in enumerate((w_lt, w_rt, w_lb, w_rb)))
    return max(0.0, alpha * obj + (1 - alpha) * region)


class SMeasure(SumMetric):
    """Structure measure; ``compute()`` returns the mean over images."""

    SUM_STATES = {"sum_sm": ()}
    higher_is_better = True

    def __init__(self, alpha: float = 0.5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.alpha = alpha

    def score_pair(self, pair: MapPair) -> PairScore:
        value = s_measure(pair, self.alpha)
        return PairScore({"sum_sm": value}, {"sm": value})

    def compute(self) -> torch.Tensor:
        return self._mean("sum_sm")
