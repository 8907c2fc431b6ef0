"""Deep-supervision loss: a weighted sum of BCE terms over several side outputs.

* U2-Net / U2-NetP (``muti_bce_loss_fusion`` of the official ``u2net_train.py``): BCE of the
  fused map plus BCE of each of the 6 side maps, all weights 1.  ``loss0`` = the fused term
  (logged as "tar" officially), ``total`` = the sum of the 7 terms (back-propagated).
* IS-Net and its GT encoder (``muti_loss_fusion``): the sum of the 6 side BCEs; ``loss0`` = side 1.

``form`` chooses the BCE computation from logits (:mod:`salseg.losses.bce`): ``logits``
(default) or ``official`` (``nn.BCELoss`` on sigmoid outputs, fp32 only).

``fused=True`` (a speed option, ``model.fused_loss``; issue 24) computes the terms of all maps
of the target's size in one ``binary_cross_entropy_with_logits`` call on the stacked maps
(one kernel instead of one per map); the terms equal the separate ones up to float rounding of
the mean.  It applies to the ``logits`` form only.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from salseg.losses.bce import LOSS_FORMS, bce


class DeepSupervisionBCE(nn.Module):
    """Sum of ``weights[i] * BCE(maps[i], target)``; returns ``(total, terms)``."""

    def __init__(self, weights: Sequence[float] | None = None, from_logits: bool = True,
                 form: str = "logits", fused: bool = False) -> None:
        super().__init__()
        if fused and form != "logits":
            raise ValueError(f"model.fused_loss needs model.loss_form=logits, got {form!r}")
        if form not in LOSS_FORMS:
            raise ValueError(f"model.loss_form must be one of {LOSS_FORMS}, got {form!r}")
        self.weights = None if weights is None else [float(w) for w in weights]
        self.from_logits = from_logits
        self.form = form
        self.fused = fused

    def forward(self, maps: Sequence[torch.Tensor], target: torch.Tensor
                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        weights = self.weights or [1.0] * len(maps)
        if len(weights) != len(maps):
            raise ValueError(f"{len(maps)} output maps but {len(weights)} loss weights")
        if self.fused and self.from_logits and all(m.shape == target.shape for m in maps):
            stacked = torch.stack(list(maps))
            per_pixel = F.binary_cross_entropy_with_logits(
                stacked, target.to(stacked.dtype).expand_as(stacked), reduction="none")
            terms = list(per_pixel.flatten(1).mean(1).unbind(0))
        else:
            terms = [bce(m, target, self.from_logits, self.form) for m in maps]
        total = sum((w * t for w, t in zip(weights, terms)), start=torch.zeros((), device=target.device))
        return total, terms
