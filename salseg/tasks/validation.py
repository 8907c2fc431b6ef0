"""Validation metrics used during training: max-F (in the recipe's convention) and MAE.

``build_val_metrics(convention)`` returns a ``ValidationMetrics`` module with ``update(prob, gt)``
(one probability map in [0, 1] and its original-resolution GT), ``compute() -> {max_f, mae}``
and ``reset()``.  Conventions (docs/metrics.md):

* ``u2net``: F from the mean-over-images P/R curves, 255 thresholds (U2-Net / BASNet tool);
* ``dis``: max of the mean of per-image F curves, 256 thresholds (DIS paper, pysodmetrics);
* ``dis_valid``: the official IS-Net training-time validation maxF (and its stopping rule).
"""
from __future__ import annotations

import torch
from torch import nn

from salseg.metrics.fmeasure import FMeasureDISValid, FMeasureMeanCurve, FMeasureMeanPR
from salseg.metrics.mae import MAE

CONVENTIONS = {"u2net": FMeasureMeanPR, "dis": FMeasureMeanCurve, "dis_valid": FMeasureDISValid}


class ValidationMetrics(nn.Module):
    def __init__(self, convention: str = "u2net") -> None:
        super().__init__()
        if convention not in CONVENTIONS:
            raise ValueError(f"val_convention must be one of {sorted(CONVENTIONS)}, got {convention!r}")
        self.convention = convention
        self.fmeasure = CONVENTIONS[convention]()
        self.mae = MAE()

    def update(self, prob: torch.Tensor, gt: torch.Tensor) -> None:
        self.fmeasure.update(prob, gt)
        self.mae.update(prob, gt)

    def compute(self) -> dict[str, torch.Tensor]:
        return {"max_f": self.fmeasure.compute()["max_f"].float(), "mae": self.mae.compute().float()}

    def reset(self) -> None:
        self.fmeasure.reset()
        self.mae.reset()


def build_val_metrics(convention: str = "u2net") -> ValidationMetrics:
    return ValidationMetrics(convention)
