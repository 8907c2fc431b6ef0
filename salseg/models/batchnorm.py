"""BatchNorm helpers for fine-tuning: detect folded (identity) statistics, freeze statistics.

Graphs exported with BatchNorm folded into the convolutions (rembg's ONNX files, most exports)
come back from the ONNX importer with identity BatchNorms (weight 1, bias 0, running mean 0,
running variance ~1).  That is exact in eval mode, but in train mode BatchNorm normalises by
the batch statistics instead, which changes the function completely (observed: fused BCE 0.093
in eval mode, 2.17 in train mode on the same batch).  Such checkpoints must be fine-tuned with
frozen BatchNorm statistics: :func:`freeze_batchnorm` keeps every BatchNorm in eval mode (running
statistics used and not updated); its affine parameters still train.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

_BN_SUFFIXES = ("running_mean", "running_var", "weight", "bias")


def _bn_prefixes(state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    return [k[: -len(".running_mean")] for k in state_dict if k.endswith(".running_mean")]


def has_folded_batchnorm(state_dict: Mapping[str, torch.Tensor], atol: float = 1e-4) -> bool:
    """Whether every BatchNorm in ``state_dict`` is the identity (folded graph import)."""
    prefixes = _bn_prefixes(state_dict)
    if not prefixes:
        return False
    for p in prefixes:
        try:
            w, b, m, v = (state_dict[f"{p}.{s}"].float() for s in
                          ("weight", "bias", "running_mean", "running_var"))
        except KeyError:
            return False
        if not (torch.allclose(w, torch.ones_like(w)) and torch.allclose(b, torch.zeros_like(b))
                and torch.allclose(m, torch.zeros_like(m))
                and torch.allclose(v, torch.ones_like(v), atol=atol)):
            return False
    return True


def freeze_batchnorm(module: nn.Module) -> int:
    """Put every BatchNorm of ``module`` in eval mode; return how many were frozen.

    Call it after each ``module.train()`` (Lightning does that at the start of every epoch):
    see :class:`salseg.tasks.base.SegmentationTask` ``freeze_bn``.
    """
    n = 0
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
            n += 1
    return n
