"""Validation metrics used during training: max-F (in the recipe's convention) and MAE.

``build_val_metrics(convention)`` returns a ``ValidationMetrics`` module with ``update(prob, gt)``
(one probability map in [0, 1] and its original-resolution GT), ``compute() -> {max_f, mae}``
and ``reset()``.  Conventions (docs/metrics.md):

* ``u2net``: F from the mean-over-images P/R curves, 255 thresholds (U2-Net / BASNet tool);
* ``dis``: max of the mean of per-image F curves, 256 thresholds (DIS paper, pysodmetrics);
* ``dis_valid``: the official IS-Net training-time validation (``valid()``, OFFICIAL_NOTES §3.5)
  and its stopping rule: maxF and MAE computed on the float maps as the official code does
  (min-max normalised, x255, ``histc`` with 255 bins), with no 8-bit quantisation.

The ``u2net`` and ``dis`` conventions score the maps quantised to 8 bits, as their reference
tools only ever see saved PNGs.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from salseg.metrics.base import PairScore, SumMetric
from salseg.metrics.conventions import DEFAULT_CONVENTION, DIS_CONVENTION, SOD_CONVENTION
from salseg.metrics.fmeasure import (
    N_THRESHOLDS_MEAN_PR,
    FMeasureDISValid,
    FMeasureMeanCurve,
    FMeasureMeanPR,
    dis_valid_pr_f,
    f_from_mean_pr,
)
from salseg.metrics.mae import MAE
from salseg.metrics.protocol import gt_to_u8


@dataclass(frozen=True)
class ValConvention:
    """How validation scores one convention: its maxF metric, and whether it scores the maps
    ``salseg-predict`` saves (restored to the GT size, 8 bits) or IS-Net's ``valid()`` on
    float maps."""

    name: str
    fmeasure: type
    predict_restored: bool = True
    float_maps: bool = False


VAL_CONVENTIONS = {c.name: c for c in (
    ValConvention(SOD_CONVENTION, FMeasureMeanPR),
    ValConvention(DIS_CONVENTION, FMeasureMeanCurve),
    ValConvention("dis_valid", FMeasureDISValid, predict_restored=False, float_maps=True),
)}
# conventions scored on the maps salseg-predict saves (restored to the GT size, 8 bits)
PREDICT_RESTORED = tuple(n for n, c in VAL_CONVENTIONS.items() if c.predict_restored)
CONVENTIONS = {n: c.fmeasure for n, c in VAL_CONVENTIONS.items()}


class DISValidFloat(SumMetric):
    """IS-Net's ``valid()`` on float maps: per image, ``p`` (float, at the GT size) is min-max
    normalised (a constant map is kept), x255, and scored by ``f1score_torch`` / ``mae_torch``
    against the raw GT (x255 when its maximum is 1); maxF of the mean P/R curves, mean MAE."""

    SUM_STATES = {"sum_precision": (N_THRESHOLDS_MEAN_PR,), "sum_recall": (N_THRESHOLDS_MEAN_PR,),
                  "sum_mae": ()}
    higher_is_better = True

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        p = preds.detach().to(torch.float32).reshape(target.shape[-2:])
        lo, hi = p.min(), p.max()
        if bool(hi != lo):
            p = (p - lo) / (hi - lo)
        p = p * 255
        g = gt_to_u8(target.reshape(target.shape[-2:]))
        if int(g.max()) == 1:
            g = g * 255
        precision, recall, _ = dis_valid_pr_f(p, g)
        mae = torch.abs(p - g.float()).sum() / (float(p.numel()) * 255.0 + 1e-4)
        self.accumulate(PairScore({"sum_precision": precision.double(),
                                   "sum_recall": recall.double(), "sum_mae": mae.double()}, {}))

    def compute(self) -> dict[str, torch.Tensor]:
        f = f_from_mean_pr(self._mean("sum_precision"), self._mean("sum_recall"))
        return {"max_f": f.max(), "mae": self._mean("sum_mae")}


class ValidationMetrics(nn.Module):
    def __init__(self, convention: str = DEFAULT_CONVENTION) -> None:
        super().__init__()
        if convention not in CONVENTIONS:
            raise ValueError(f"val_convention must be one of {sorted(CONVENTIONS)}, got {convention!r}")
        self.convention = convention
        self.float_metric = DISValidFloat() if VAL_CONVENTIONS[convention].float_maps else None
        self.fmeasure = None if self.float_metric is not None else CONVENTIONS[convention]()
        self.mae = None if self.float_metric is not None else MAE()

    def update(self, prob: torch.Tensor, gt: torch.Tensor) -> None:
        if self.float_metric is not None:
            self.float_metric.update(prob, gt)
            return
        self.fmeasure.update(prob, gt)
        self.mae.update(prob, gt)

    def compute(self) -> dict[str, torch.Tensor]:
        if self.float_metric is not None:
            return {k: v.float() for k, v in self.float_metric.compute().items()}
        return {"max_f": self.fmeasure.compute()["max_f"].float(), "mae": self.mae.compute().float()}

    def reset(self) -> None:
        for metric in (self.float_metric, self.fmeasure, self.mae):
            if metric is not None:
                metric.reset()


def build_val_metrics(convention: str = DEFAULT_CONVENTION) -> ValidationMetrics:
    return ValidationMetrics(convention)
