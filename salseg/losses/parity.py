"""The project's losses in the call signatures of the outside parity check.

``loss_fns()`` returns the dict that ``../shared/reference/check_parity.py --project`` expects.
The parity check passes official *probabilities*, so the wrappers use ``from_logits=False``,
which is the official ``nn.BCELoss`` computation; training uses the same classes with logits.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from salseg.losses.deep_supervision import DeepSupervisionBCE
from salseg.losses.feature_sync import FeatureSyncLoss

_BCE = DeepSupervisionBCE(from_logits=False)


def u2net_loss(outputs7: Sequence[torch.Tensor], target: torch.Tensor):
    total, terms = _BCE(list(outputs7), target)
    return terms[0], total


def isnet_loss(sides6: Sequence[torch.Tensor], target: torch.Tensor):
    total, terms = _BCE(list(sides6), target)
    return terms[0], total


def isnet_kl_loss(sides6, target, dfs6, fs6, mode: str = "MSE"):
    bce_total, terms = _BCE(list(sides6), target)
    sync_total, _ = FeatureSyncLoss(mode=mode)(list(dfs6), list(fs6))
    return terms[0], bce_total + sync_total


def loss_fns() -> dict:
    return {"u2net": u2net_loss, "isnet": isnet_loss, "isnet_kl": isnet_kl_loss,
            "isnet_kl_mode": isnet_kl_loss}
