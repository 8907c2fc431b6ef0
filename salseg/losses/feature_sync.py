"""IS-Net feature synchronisation (intermediate supervision, DIS paper §4.2).

The segmentation network's 6 features (decoder outputs ``stage1d..stage5d`` and ``stage6``) are
pulled towards the frozen GT encoder's 6 encoder features of the same shape.  The official
``muti_loss_fusion_kl`` uses ``nn.MSELoss`` with mean reduction per stage, all weights 1 (the
default here).  The other official modes are available: ``KL`` (``KLDivLoss`` with *mean*
reduction over all elements of ``log_softmax(pred, 1)`` vs ``softmax(target, 1)``), ``MAE``
(L1) and ``SmoothL1``.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

MODES = ("MSE", "KL", "MAE", "SmoothL1")


def feature_distance(pred: torch.Tensor, target: torch.Tensor, mode: str = "MSE") -> torch.Tensor:
    """Distance between one pair of feature maps, as the official loss modes define it."""
    if pred.shape != target.shape:
        raise ValueError(f"feature shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
    if mode == "MSE":
        return F.mse_loss(pred, target)
    if mode == "KL":
        # elementwise mean over all elements (official KLDivLoss(size_average=True)), not batchmean
        return F.kl_div(F.log_softmax(pred, dim=1), F.softmax(target, dim=1), reduction="none").mean()
    if mode == "MAE":
        return F.l1_loss(pred, target)
    if mode == "SmoothL1":
        return F.smooth_l1_loss(pred, target)
    raise ValueError(f"unknown feature-sync mode {mode!r}; expected one of {MODES}")


class FeatureSyncLoss(nn.Module):
    """Weighted sum of per-stage feature distances; returns ``(total, terms)``."""

    def __init__(self, weights: Sequence[float] | None = None, mode: str = "MSE") -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"unknown feature-sync mode {mode!r}; expected one of {MODES}")
        self.weights = None if weights is None else [float(w) for w in weights]
        self.mode = mode

    def forward(self, features: Sequence[torch.Tensor], targets: Sequence[torch.Tensor]
                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if len(features) != len(targets):
            raise ValueError(f"{len(features)} features but {len(targets)} target features")
        weights = self.weights or [1.0] * len(features)
        terms = [feature_distance(f, t, self.mode) for f, t in zip(features, targets)]
        total = sum((w * t for w, t in zip(weights, terms)), start=torch.zeros((), device=terms[0].device))
        return total, terms
