"""E-measure, the enhanced-alignment measure (Fan et al., IJCAI 2018), as pysodmetrics computes it
(docs/metrics.md, "E-measure").

For a binary map b and the binary GT, the alignment of every pixel only depends on which of the
four (b, g) combinations it belongs to, so the score at every threshold follows from four counts:
``E = sum_c count_c * (align_c + 1)^2 / 4 / (N - 1 + eps)`` with
``align = 2 (b - mean b)(g - mean g) / ((b - mean b)^2 + (g - mean g)^2 + eps)``; an empty GT gives
``count(~b)``, a full GT ``count(b)``. The curve uses the F-measure's 256 thresholds
(``floor(255 minmax(p)) >= t``) and the dataset curve is the mean of per-image curves; ``max_em``
and ``mean_em`` are its max and mean (the DIS paper's E_phi^m is ``mean_em``); the adaptive E binarises at
``min(2 mean(p), 1)``.
"""
from __future__ import annotations

import numpy as np
import torch

from salseg.metrics.base import PairScore, SumMetric
from salseg.metrics.fmeasure import (
    N_THRESHOLDS_MEAN_CURVE,
    adaptive_counts,
    pysod_counts,
)
from salseg.metrics.protocol import MapPair

EPS = 2.220446049250313e-16  # numpy.spacing(1), MATLAB's eps


def emeasure_from_counts(tp: np.ndarray, fp: np.ndarray, n_fg: int, numel: int) -> np.ndarray:
    """E-measure for each entry of the TP / FP count arrays (float64)."""
    pred_fg = tp + fp
    pred_bg = numel - pred_fg
    if n_fg == 0:
        total = pred_bg
    elif n_fg == numel:
        total = pred_fg
    else:
        fn = n_fg - tp
        tn = pred_bg - fn
        mean_pred = pred_fg / numel
        mean_gt = n_fg / numel
        total = np.zeros_like(tp)
        for count, b_dev, g_dev in (
            (tp, 1 - mean_pred, 1 - mean_gt),
            (fp, 1 - mean_pred, -mean_gt),
            (fn, -mean_pred, 1 - mean_gt),
            (tn, -mean_pred, -mean_gt),
        ):
            align = 2 * (b_dev * g_dev) / (b_dev**2 + g_dev**2 + EPS)
            total = total + (align + 1) ** 2 / 4 * count
    return total / (numel - 1 + EPS)


class EMeasure(SumMetric):
    """E-measure curve (256 thresholds), mean/max over thresholds and adaptive E.
    ``compute()`` keys: ``mean_em``, ``max_em``, ``adp_em``, ``em_curve``."""

    SUM_STATES = {"sum_curve": (N_THRESHOLDS_MEAN_CURVE,), "sum_adp_em": ()}
    higher_is_better = True

    def score_pair(self, pair: MapPair) -> PairScore:
        n_fg, numel = pair.n_fg, pair.numel
        tp, fp = pysod_counts(pair)
        curve = emeasure_from_counts(tp, fp, n_fg, numel)
        a_tp, a_fp = adaptive_counts(pair)
        adp = float(emeasure_from_counts(np.array([a_tp], np.float64), np.array([a_fp], np.float64),
                                         n_fg, numel)[0])
        row = {"mean_em": float(curve.mean()), "max_em": float(curve.max()), "adp_em": adp}
        return PairScore({"sum_curve": curve, "sum_adp_em": adp}, row)

    def compute(self) -> dict[str, torch.Tensor]:
        curve = self._mean("sum_curve")
        return {
            "mean_em": curve.mean(),
            "max_em": curve.max(),
            "adp_em": self._mean("sum_adp_em"),
            "em_curve": curve,
        }
