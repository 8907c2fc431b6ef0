"""Binary cross-entropy terms used by U2-Net and IS-Net, in two forms.

* ``logits`` (salseg's default): ``F.binary_cross_entropy_with_logits`` on the logits;
  numerically stable and allowed under CUDA autocast (mixed precision).
* ``official``: what the official code computes, ``nn.BCELoss`` (mean, log clamped at -100) on
  ``sigmoid(logits)``.  fp32/fp64 only: it is refused under autocast or on half tensors.

The two agree closely for moderate logits and part ways where float32's sigmoid saturates.
Above a logit of about 16.6 ``sigmoid`` rounds to exactly 1.0; on a pixel whose target is below 1
the official form then hits the clamp: its value is ``100 * (1 - target)`` and its gradient is
zero, whereas the logits form keeps the exact value (about ``logit * (1 - target)``) and the
gradient ``sigmoid(logit) - target``.  Below that, ``1 - sigmoid`` is already coarsely rounded
(float32 steps of 6e-8 near 1), so the official value drifts from the exact one for logits
above about 10.  On the negative side the same clamp (value ``100 * target``, zero gradient)
is reached below a logit of about -88.7, where float32's sigmoid underflows to 0.
``tests/test_losses.py`` compares both forms' values and gradients on saturated logits.

``bce(..., from_logits=False)`` takes probabilities (the parity check feeds the official ones).

When a prediction's size differs from the target's, the target is resized bilinearly with
``align_corners=True`` as in the official IS-Net losses (never triggered in practice, since
every side output is already upsampled to the input size).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

LOSS_FORMS = ("logits", "official")


def match_target(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Resize ``target`` to ``pred``'s spatial size if needed (bilinear, align_corners=True)."""
    if pred.shape[-2:] != target.shape[-2:]:
        target = F.interpolate(target, size=pred.shape[-2:], mode="bilinear", align_corners=True)
    return target


def check_official_precision(x: torch.Tensor) -> None:
    """The official form runs in fp32/fp64 only: refuse autocast and half tensors."""
    if torch.is_autocast_enabled(x.device.type) or x.dtype in (torch.float16, torch.bfloat16):
        raise ValueError(
            "model.loss_form=official (nn.BCELoss on sigmoid outputs) needs full precision: use "
            "trainer.precision=32-true, or model.loss_form=logits for mixed precision")


def bce(pred: torch.Tensor, target: torch.Tensor, from_logits: bool = True,
        form: str = "logits") -> torch.Tensor:
    """Mean binary cross-entropy of one map against a (possibly soft) target in [0, 1].

    ``pred`` holds logits (``from_logits=True``, in the given ``form``) or probabilities."""
    target = match_target(pred, target).to(pred.dtype)
    if not from_logits:
        return F.binary_cross_entropy(pred, target)
    if form == "logits":
        return F.binary_cross_entropy_with_logits(pred, target)
    if form == "official":
        check_official_precision(pred)
        return F.binary_cross_entropy(torch.sigmoid(pred), target)
    raise ValueError(f"loss form must be one of {LOSS_FORMS}, got {form!r}")
