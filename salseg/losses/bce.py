"""Binary cross-entropy terms used by U2-Net and IS-Net, from logits or from probabilities.

The official code applies the sigmoid inside the models and uses ``nn.BCELoss`` (mean reduction,
log clamped at -100) on probabilities.  salseg trains from logits with
``F.binary_cross_entropy_with_logits`` (numerically stable and allowed under CUDA autocast);
both agree to float32 rounding unless the sigmoid saturates, where BCELoss's clamp kicks in.
``from_logits=False`` reproduces the official computation exactly.

When a prediction's size differs from the target's, the target is resized bilinearly with
``align_corners=True`` as in the official IS-Net losses (never triggered in practice, since
every side output is already upsampled to the input size).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def match_target(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Resize ``target`` to ``pred``'s spatial size if needed (bilinear, align_corners=True)."""
    if pred.shape[-2:] != target.shape[-2:]:
        target = F.interpolate(target, size=pred.shape[-2:], mode="bilinear", align_corners=True)
    return target


def bce(pred: torch.Tensor, target: torch.Tensor, from_logits: bool = True) -> torch.Tensor:
    """Mean binary cross-entropy of one map against a (possibly soft) target in [0, 1]."""
    target = match_target(pred, target).to(pred.dtype)
    if from_logits:
        return F.binary_cross_entropy_with_logits(pred, target)
    return F.binary_cross_entropy(pred, target)
