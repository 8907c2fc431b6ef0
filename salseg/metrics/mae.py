"""Mean absolute error (Perazzi et al. 2012) in the reference tools' three normalisations
(docs/metrics.md, "MAE"):

* ``pysodmetrics`` (default, also the DIS paper): ``mean(|minmax(p) - (g > 128)|)``, dataset = mean.
* ``bset`` (U2-Net / BASNet tool ``compute_mae``): ``sum(|p / (max p + 1e-8) - g / (max g + 1e-8)|)
  / (N + 1e-8)`` with a non-binarised GT; dataset = sum / (count + 1e-8).
* ``dis_valid`` (IS-Net training validation ``mae_torch``, float32): ``sum(|255 minmax(p) - g|)
  / (255 N + 1e-4)`` with the raw GT.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from salseg.metrics.base import PairScore, SumMetric
from salseg.metrics.fmeasure import dis_valid_inputs
from salseg.metrics.protocol import MapPair

MAE_VARIANTS = ("pysodmetrics", "bset", "dis_valid")


def mae_pysodmetrics(pair: MapPair) -> float:
    lut, hist = pair.lut_p_norm, pair.hist
    return float(np.dot(hist[0], lut) + np.dot(hist[1], 1 - lut)) / pair.numel


def mae_bset(pair: MapPair) -> float:
    p = pair.p255
    g = pair.g8.to(torch.float64)
    err = torch.abs(p / (p.max() + 1e-8) - g / (g.max() + 1e-8)).sum()
    return float(err / (float(pair.shape[0]) * float(pair.shape[1]) + 1e-8))


def mae_dis_valid(pair: MapPair) -> float:
    pred255, g = dis_valid_inputs(pair)
    err = torch.sum(torch.absolute(torch.sub(pred255.float(), g.float())))
    return float(torch.divide(err, float(pair.shape[0]) * float(pair.shape[1]) * 255.0 + 1e-4))


class MAE(SumMetric):
    """Mean absolute error; ``variant`` in ``pysodmetrics`` (default), ``bset``, ``dis_valid``."""

    SUM_STATES = {"sum_mae": ()}
    higher_is_better = False

    def __init__(self, variant: str = "pysodmetrics", **kwargs: Any) -> None:
        if variant not in MAE_VARIANTS:
            raise ValueError(f"MAE variant must be one of {MAE_VARIANTS}, got {variant!r}")
        super().__init__(**kwargs)
        self.variant = variant

    def score_pair(self, pair: MapPair) -> PairScore:
        fn = {"pysodmetrics": mae_pysodmetrics, "bset": mae_bset, "dis_valid": mae_dis_valid}
        value = fn[self.variant](pair)
        key = "mae" if self.variant == "pysodmetrics" else f"mae_{self.variant}"
        return PairScore({"sum_mae": value}, {key: value})

    def compute(self) -> torch.Tensor:
        if self.variant == "bset":
            return self.sum_mae / (self.n_images + 1e-8)
        return self._mean("sum_mae")
