"""BiRefNet's training loss (official ``loss.py`` ``PixLoss`` + the gradient loss of
``train.py``) as a configuration of :mod:`salseg.losses.terms`.

``loss = sum_l sum_c lambda_c * c(sigmoid(up(pred_l)), gt)`` over the 4 levels
``(m4, m3, m2, logits)`` and the criteria ``bce`` (``nn.BCELoss``), ``iou``, ``ssim``, ``mae``,
every map resized to the GT (bilinear, ``align_corners=True``) before the sigmoid, ``gt``
clamped to [0, 1]; plus ``sum_k BCE(sigmoid(up(gdt_pred_k)), sigmoid(gdt_label_k))`` over the 3
gradient-branch outputs, the labels **not** detached (weight 1).  The fine-tune phase
(``finetune_last_epochs``) multiplies the weights at the start of every fine-tune epoch,
compounding: ``bce * 0``, ``iou * 0.5``, ``mae * 0.9``, ``ssim * 1``.

:func:`birefnet_loss_config` gives the ``model.loss`` mapping (``configs/loss/birefnet_*.yaml``
hold the same, checked by ``tests/test_losses_terms.py``); :func:`birefnet_loss` is the plain
function of ``check_birefnet.py --loss salseg.losses.birefnet:birefnet_loss``.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from salseg.losses.terms import LossTerms
from salseg.models.card import ModelOutputs

#: criteria of ``PixLoss`` in the official order, and their per-epoch fine-tune factors
PIX_CRITERIA = ("bce", "iou", "ssim", "mae")
FINETUNE_FACTORS = {"bce": 0.0, "iou": 0.5, "ssim": 1.0, "mae": 0.9}
DIS5K_LAMBDAS = {"bce": 30.0, "iou": 0.5, "ssim": 10.0}
GENERAL_LAMBDAS = {"bce": 30.0, "iou": 0.5, "ssim": 10.0, "mae": 100.0}


def birefnet_loss_config(lambdas: Mapping[str, float], finetune_last_epochs: int | None = None
                         ) -> dict:
    """The ``model.loss`` terms of BiRefNet with the given ``lambdas_pix_last``."""
    unsupported = sorted(k for k, v in lambdas.items() if v and k not in PIX_CRITERIA)
    if unsupported:
        raise ValueError(f"BiRefNet loss criteria {unsupported} are not implemented; "
                         f"supported: {list(PIX_CRITERIA)}")
    terms: dict = {}
    for c in PIX_CRITERIA:
        if not lambdas.get(c):
            continue  # the official PixLoss builds only the criteria of non-zero weight
        term = {"criterion": c, "outputs": "sides", "weight": float(lambdas[c]), "resize": "pred"}
        if c == "bce":
            term["form"] = "official"
        if finetune_last_epochs and FINETUNE_FACTORS[c] != 1.0:
            term["finetune"] = {"last_epochs": int(finetune_last_epochs),
                                "factor": FINETUNE_FACTORS[c]}
        terms[c] = term
    terms["gdt"] = {"criterion": "bce", "form": "official", "outputs": "gdt_preds",
                    "target": "aux:gdt_labels", "target_fn": "sigmoid", "resize": "pred"}
    return terms


def birefnet_loss(preds: Sequence[torch.Tensor], gdt_preds: Sequence[torch.Tensor],
                  gdt_labels: Sequence[torch.Tensor], gt: torch.Tensor,
                  lambdas: Mapping[str, float]) -> dict:
    """The official loss of BiRefNet's training step: ``{"loss", "loss_pix", "loss_gdt"}`` and
    the official ``loss_dict`` entries (per criterion, the weighted term averaged over the
    levels)."""
    preds = list(preds)
    terms = LossTerms.from_config(birefnet_loss_config(lambdas))
    outputs = ModelOutputs(sides=preds, features=[], prediction=preds[-1],
                           aux={"gdt_preds": list(gdt_preds), "gdt_labels": list(gdt_labels)})
    total, logged = terms(outputs, {"mask": gt.clamp(0, 1)})
    pix = [c for c in PIX_CRITERIA if lambdas.get(c)]
    out = {"loss": total, "loss_gdt": logged["loss_gdt"],
           "loss_pix": sum((logged[f"loss_{c}"] for c in pix[1:]), start=logged[f"loss_{pix[0]}"])}
    out.update({c: logged[f"loss_{c}"] / len(preds) for c in pix})
    return out
