"""Deep-supervision loss: a weighted sum of BCE terms over several side outputs.

* U2-Net / U2-NetP (``muti_bce_loss_fusion`` of the official ``u2net_train.py``): BCE of the
  fused map plus BCE of each of the 6 side maps, all weights 1.  ``loss0`` = the fused term
  (logged as "tar" officially), ``total`` = the sum of the 7 terms (back-propagated).
* IS-Net and its GT encoder (``muti_loss_fusion``): the sum of the 6 side BCEs; ``loss0`` = side 1.

``form`` chooses the BCE computation from logits (:mod:`salseg.losses.bce`): ``logits``
(default) or ``official`` (``nn.BCELoss`` on sigmoid outputs, fp32 only).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from salseg.losses.bce import LOSS_FORMS, bce


class DeepSupervisionBCE(nn.Module):
    """Sum of ``weights[i] * BCE(maps[i], target)``; returns ``(total, terms)``."""

    def __init__(self, weights: Sequence[float] | None = None, from_logits: bool = True,
                 form: str = "logits") -> None:
        super().__init__()
        if form not in LOSS_FORMS:
            raise ValueError(f"model.loss_form must be one of {LOSS_FORMS}, got {form!r}")
        self.weights = None if weights is None else [float(w) for w in weights]
        self.from_logits = from_logits
        self.form = form

    def forward(self, maps: Sequence[torch.Tensor], target: torch.Tensor
                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        weights = self.weights or [1.0] * len(maps)
        if len(weights) != len(maps):
            raise ValueError(f"{len(maps)} output maps but {len(weights)} loss weights")
        terms = [bce(m, target, self.from_logits, self.form) for m in maps]
        total = sum((w * t for w, t in zip(weights, terms)), start=torch.zeros((), device=target.device))
        return total, terms
