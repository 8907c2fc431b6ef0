"""F-measure (beta^2 = 0.3, Achanta et al. 2009) with precision/recall curves, in the three
dataset conventions of the reference tools (docs/metrics.md, "F-measure"):

* :class:`FMeasureMeanCurve` - pysodmetrics / the DIS paper's toolbox: 256 thresholds
  ``q >= t`` on ``q = floor(255 * minmax(p))``; dataset curve = mean of the per-image F curves;
  ``max_f`` = its max (``max_f_mean_curve``), ``mean_f`` = its mean; adaptive F at
  ``min(2 mean(p), 1)``.
* :class:`FMeasureMeanPR` - the U2-Net / BASNet Binary-Segmentation-Evaluation-Tool: 255
  thresholds on ``255 p / (max p + 1e-8)``; P and R averaged over images first, then
  ``F = 1.3 P R / (0.3 P + R + 1e-8)``; ``max_f`` = ``max_f_mean_pr``.
* :class:`FMeasureDISValid` - the maxF that IS-Net's training-time validation logs (float32,
  ``torch.histc`` with 255 bins, ``+1e-4`` terms), aggregated like the U2-Net tool.

Curves are stored with index t = threshold t, ascending.
"""
from __future__ import annotations

import numpy as np
import torch

from salseg.metrics.base import PairScore, SumMetric
from salseg.metrics.protocol import MapPair, _bincount

BETA2 = 0.3
N_THRESHOLDS_MEAN_CURVE = 256
N_THRESHOLDS_MEAN_PR = 255


def counts_at_thresholds(levels: torch.Tensor, gt: torch.Tensor, n_levels: int) -> tuple[
    np.ndarray, np.ndarray
]:
    """Per-threshold counts for per-pixel integer ``levels`` in [0, n_levels): ``tp[t]`` =
    foreground pixels with level >= t, ``fp[t]`` = background pixels with level >= t."""
    idx = levels.to(torch.int64) + n_levels * gt.to(torch.int64)
    hist = _bincount(idx, 2 * n_levels).reshape(2, n_levels).astype(np.float64)
    cum = np.cumsum(hist[:, ::-1], axis=1)[:, ::-1]
    return cum[1], cum[0]


def counts_from_hist(level_of_value: np.ndarray, hist: np.ndarray, n_levels: int) -> tuple[
    np.ndarray, np.ndarray
]:
    """Per-threshold counts from value histograms ``hist`` (2, 256) and the level of each value."""
    fg = np.bincount(level_of_value, weights=hist[1], minlength=n_levels)
    bg = np.bincount(level_of_value, weights=hist[0], minlength=n_levels)
    return np.cumsum(fg[::-1])[::-1], np.cumsum(bg[::-1])[::-1]


def pysod_counts(pair: MapPair) -> tuple[np.ndarray, np.ndarray]:
    """TP / FP counts at pysodmetrics' 256 thresholds ``uint8(255 minmax(p)) >= t``, cached on the
    pair (F and E share them)."""

    def compute() -> tuple[np.ndarray, np.ndarray]:
        # astype(uint8) truncates; values outside [min, max] have zero counts (clip keeps them in range)
        levels = np.clip(np.floor(pair.lut_p_norm * 255), 0, 255).astype(np.int64)
        return counts_from_hist(levels, pair.hist, N_THRESHOLDS_MEAN_CURVE)

    return pair._get("pysod_counts", compute)


def pysod_pr_f_curves(tp: np.ndarray, fp: np.ndarray, n_fg: int) -> tuple[
    np.ndarray, np.ndarray, np.ndarray
]:
    """Precision, recall and F curves as pysodmetrics defines them (P = 0 when nothing is
    predicted, R = TP / max(|G|, 1), F = 0 when P R = 0)."""
    pred_pos = tp + fp
    precision = tp / np.where(pred_pos == 0, 1, pred_pos)
    recall = tp / max(n_fg, 1)
    num = (1 + BETA2) * precision * recall
    den = np.where(num == 0, 1, BETA2 * precision + recall)
    return precision, recall, num / den


def mean_prediction(pair: MapPair) -> float:
    """``mean(minmax(p))`` over the image."""
    return float(np.dot(pair.hist.sum(0), pair.lut_p_norm)) / pair.numel


def adaptive_threshold(pair: MapPair) -> float:
    """``min(2 * mean(p), 1)`` (Achanta et al.; pysodmetrics ``get_adaptive_threshold``)."""
    return min(2 * mean_prediction(pair), 1.0)


def adaptive_mask(pair: MapPair) -> np.ndarray:
    """Which 8-bit levels are at or above the adaptive threshold, decided **exactly**.

    ``minmax(p) >= min(2 mean(minmax(p)), 1)`` is evaluated in integer arithmetic on the 8-bit
    levels: with ``N`` pixels, level sum ``S`` and range ``lo..hi``, level ``v`` is foreground iff
    ``N (v - lo) >= 2 (S - N lo)`` or ``v == hi`` (a constant map: iff ``v`` is 0 or 255, as
    ``v / 255 >= min(2 v / 255, 1)``).  A level exactly on the threshold is foreground (``>=``,
    the reference's comparison), whatever the order in which a float mean would be summed, so
    the result is the same on every machine (docs/metrics.md, "Ties at the adaptive threshold")."""
    counts = pair.hist.sum(0).astype(np.int64)
    levels = np.arange(256, dtype=np.int64)
    n = int(counts.sum())
    total = int(np.dot(counts, levels))
    lo, hi = pair.value_range
    if hi == lo:
        return (levels == lo) & ((lo == 0) | (lo == 255))
    return (n * (levels - lo) >= 2 * (total - n * lo)) | (levels == hi)


def adaptive_counts(pair: MapPair) -> tuple[int, int]:
    """(TP, FP) of ``minmax(p) >= adaptive threshold`` (ties decided exactly, see
    :func:`adaptive_mask`)."""
    above = adaptive_mask(pair)
    return int(pair.hist[1][above].sum()), int(pair.hist[0][above].sum())


def adaptive_fmeasure(pair: MapPair) -> float:
    """F-measure of the prediction binarised at the adaptive threshold (0 if TP = 0)."""
    tp, fp = adaptive_counts(pair)
    if tp == 0:
        return 0.0
    pre = tp / (tp + fp)
    rec = tp / pair.n_fg
    return (1 + BETA2) * pre * rec / (BETA2 * pre + rec)


def bset_pr_curves(pair: MapPair) -> tuple[np.ndarray, np.ndarray]:
    """Per-image precision/recall of the U2-Net / BASNet tool (``compute_pre_rec``): 255
    thresholds k = 0..254, ``n >= k`` with ``n = 255 p / (max p + 1e-8)`` (not rounded), GT
    ``255 g / (max g + 1e-8) > 128``; P = TP / (TP + FP + 1e-8), R = TP / (|G| + 1e-8)."""
    v = np.arange(256, dtype=np.float64)
    mx = pair.value_range[1]
    n = (v / (mx + 1e-8)) * 255
    levels = np.clip(np.floor(n), 0, N_THRESHOLDS_MEAN_PR - 1).astype(np.int64)
    gmax = int(pair.g8.max())
    gt_lut = (v / (gmax + 1e-8)) * 255 > 128
    if np.array_equal(gt_lut[: gmax + 1], v[: gmax + 1] > 128):
        hist = pair.hist  # the tool's GT equals g > 128 here
    else:  # e.g. a GT stored as 0/1: the tool's max-normalisation makes it foreground
        gt_b = torch.from_numpy(gt_lut).to(pair.g8.device)[pair.g8.to(torch.int64)]
        idx = pair.p8.to(torch.int64) + 256 * gt_b.to(torch.int64)
        hist = _bincount(idx, 512).reshape(2, 256)
    tp, fp = counts_from_hist(levels, hist, N_THRESHOLDS_MEAN_PR)
    n_fg = float(hist[1].sum())
    return tp / (tp + fp + 1e-8), tp / (n_fg + 1e-8)


def f_from_mean_pr(precision, recall):  # noqa: ANN001, ANN201 - numpy or torch
    """U2-Net tool: F of the mean P and R curves, ``1.3 P R / (0.3 P + R + 1e-8)``."""
    return (1 + BETA2) * precision * recall / (BETA2 * precision + recall + 1e-8)


def dis_valid_inputs(pair: MapPair) -> tuple[torch.Tensor, torch.Tensor]:
    """IS-Net ``valid()`` pre-processing (float32): prediction min-max normalised then x255
    (a constant map is kept as ``p``), GT raw (x255 when its maximum is 1)."""
    pf = pair.p255.to(torch.float32) / 255
    lo, hi = pf.min(), pf.max()
    if bool(hi != lo):
        pf = (pf - lo) / (hi - lo)
    g = pair.g8
    if int(g.max()) == 1:
        g = g * 255
    return pf * 255, g


def dis_valid_pr_f(pred255: torch.Tensor, g_raw: torch.Tensor) -> tuple[
    torch.Tensor, torch.Tensor, torch.Tensor
]:
    """IS-Net ``f1score_torch``: float32 ``histc`` with 255 bins over [0, 255], ``+1e-4`` terms.
    Returns ascending curves (index k = threshold k)."""
    gt = g_raw > 128
    n_fg = (gt.float() * 1).sum()
    pp = torch.histc(pred255[gt], bins=255, min=0, max=255)
    nn = torch.histc(pred255[~gt], bins=255, min=0, max=255)
    tp = torch.cumsum(torch.flipud(pp), dim=0)
    fp = torch.cumsum(torch.flipud(nn), dim=0)
    precision = tp / (tp + fp + 1e-4)
    recall = tp / (n_fg + 1e-4)
    f = (1 + 0.3) * precision * recall / (0.3 * precision + recall + 1e-4)
    return precision.flip(0), recall.flip(0), f.flip(0)


class FMeasureMeanCurve(SumMetric):
    """pysodmetrics / DIS convention (max of the mean of per-image F curves, 256 thresholds),
    plus mean-F, adaptive-F and the mean P/R curves. ``compute()`` keys: ``max_f``, ``mean_f``,
    ``adp_f``, ``argmax_threshold``, ``f_curve``, ``precision``, ``recall``, ``max_f_from_mean_pr``."""

    SUM_STATES = {
        "sum_f": (N_THRESHOLDS_MEAN_CURVE,),
        "sum_precision": (N_THRESHOLDS_MEAN_CURVE,),
        "sum_recall": (N_THRESHOLDS_MEAN_CURVE,),
        "sum_adp_f": (),
    }
    higher_is_better = True

    def score_pair(self, pair: MapPair) -> PairScore:
        tp, fp = pysod_counts(pair)
        precision, recall, f = pysod_pr_f_curves(tp, fp, pair.n_fg)
        adp = adaptive_fmeasure(pair)
        row = {"max_f": float(f.max()), "mean_f": float(f.mean()), "adp_f": adp}
        sums = {"sum_f": f, "sum_precision": precision, "sum_recall": recall, "sum_adp_f": adp}
        return PairScore(sums, row)

    def compute(self) -> dict[str, torch.Tensor]:
        f = self._mean("sum_f")
        precision, recall = self._mean("sum_precision"), self._mean("sum_recall")
        num = (1 + BETA2) * precision * recall
        den = torch.where(num == 0, torch.ones_like(num), BETA2 * precision + recall)
        return {
            "max_f": f.max(),
            "mean_f": f.mean(),
            "adp_f": self._mean("sum_adp_f"),
            "argmax_threshold": f.argmax(),
            "f_curve": f,
            "precision": precision,
            "recall": recall,
            "max_f_from_mean_pr": (num / den).max(),
        }


class FMeasureMeanPR(SumMetric):
    """U2-Net / BASNet convention (Binary-Segmentation-Evaluation-Tool): F of the mean-over-images
    P and R curves, 255 thresholds. ``compute()`` keys: ``max_f``, ``mean_f``,
    ``argmax_threshold``, ``f_curve``, ``precision``, ``recall``."""

    SUM_STATES = {"sum_precision": (N_THRESHOLDS_MEAN_PR,), "sum_recall": (N_THRESHOLDS_MEAN_PR,)}
    higher_is_better = True

    def score_pair(self, pair: MapPair) -> PairScore:
        precision, recall = bset_pr_curves(pair)
        f = f_from_mean_pr(precision, recall)
        return PairScore(
            {"sum_precision": precision, "sum_recall": recall}, {"max_f_bset": float(f.max())}
        )

    def compute(self) -> dict[str, torch.Tensor]:
        n = self.n_images + 1e-8  # the tool divides by (count + 1e-8)
        precision, recall = self.sum_precision / n, self.sum_recall / n
        f = f_from_mean_pr(precision, recall)
        return {
            "max_f": f.max(),
            "mean_f": f.mean(),
            "argmax_threshold": f.argmax(),
            "f_curve": f,
            "precision": precision,
            "recall": recall,
        }


class FMeasureDISValid(SumMetric):
    """The maxF of IS-Net's training-time validation (``f1score_torch`` per image in float32, then
    F of the mean P/R curves with ``+1e-8``). ``compute()`` keys: ``max_f``, ``f_curve``."""

    SUM_STATES = {"sum_precision": (N_THRESHOLDS_MEAN_PR,), "sum_recall": (N_THRESHOLDS_MEAN_PR,)}
    higher_is_better = True

    def score_pair(self, pair: MapPair) -> PairScore:
        precision, recall, f = dis_valid_pr_f(*dis_valid_inputs(pair))
        return PairScore(
            {"sum_precision": precision.double(), "sum_recall": recall.double()},
            {"max_f_dis_valid": float(f.max())},
        )

    def compute(self) -> dict[str, torch.Tensor]:
        precision, recall = self._mean("sum_precision"), self._mean("sum_recall")
        f = f_from_mean_pr(precision, recall)
        return {"max_f": f.max(), "f_curve": f}
