"""``U2NetTask``: deep-supervised training of U2-Net / U2-NetP (paper §3.3, official
``u2net_train.py``): BCE of the fused map plus BCE of each of the six side maps, weights 1,
computed from logits.  ``loss_weights`` (7 values, fused first) makes the weights configurable;
``loss_form`` chooses ``logits`` (default) or ``official`` (``nn.BCELoss`` on sigmoid outputs,
fp32 only; :mod:`salseg.losses.bce`).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from salseg.losses import DeepSupervisionBCE
from salseg.tasks.base import SegmentationTask

TERM_NAMES = ["bce_fused"] + [f"bce_side{i}" for i in range(1, 7)]


class U2NetTask(SegmentationTask):
    def __init__(self, name: str = "u2net", loss_weights: Sequence[float] | None = None,
                 loss_form: str = "logits", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.criterion = DeepSupervisionBCE(weights=loss_weights, form=loss_form)

    def compute_loss(self, batch: dict, outputs: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        total, terms = self.criterion(self.card.outputs(outputs).sides, batch["mask"])
        return total, dict(zip(TERM_NAMES, terms))
