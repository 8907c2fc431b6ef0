"""BatchNorm handling, one home: folding for inference, detecting folded weights and freezing
statistics for fine-tuning.

*Folding for inference* (:func:`fold_batchnorm`, the PyTorch back-end's ``fold_bn``).  In eval
mode a BatchNorm is an affine map per channel, ``y = (x - mean) / sqrt(var + eps) * gamma +
beta``, so it can be merged into the convolution before it (weights scaled per output channel,
bias shifted); the network then runs one kernel instead of two per ``REBNCONV`` — what the ONNX
export does through constant folding.  It works on any module whose convolution/BatchNorm pairs
are siblings named ``conv_s1``/``bn_s1`` (``REBNCONV``) or ``conv``/``bn`` (the GT encoder's
input block), i.e. every salseg network, and returns a **copy** (the given module keeps its
state dict, so checkpoints and training are not affected) whose folded BatchNorms are
``nn.Identity``.  Outputs agree with the unfolded network to float32 rounding (tested within
the parity tolerance).

*Folded weights and fine-tuning* (:func:`has_folded_batchnorm`, :func:`freeze_batchnorm`).
Graphs exported with BatchNorm folded into the convolutions (rembg's ONNX files, most exports)
come back from the ONNX importer with identity BatchNorms (weight 1, bias 0, running mean 0,
running variance ~1).  That is exact in eval mode, but in train mode BatchNorm normalises by
the batch statistics instead, which changes the function completely (observed: fused BCE 0.093
in eval mode, 2.17 in train mode on the same batch).  Such checkpoints must be fine-tuned with
frozen BatchNorm statistics: :func:`freeze_batchnorm` keeps every BatchNorm in eval mode
(running statistics used and not updated); its affine parameters still train.
"""
from __future__ import annotations

import copy
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


# -- folding for inference ----------------------------------------------------------------------
PAIRS = (("conv_s1", "bn_s1"), ("conv", "bn"))


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new convolution equal to ``bn(conv(x))`` with ``bn`` in eval mode."""
    if not bn.track_running_stats or bn.running_mean is None or bn.running_var is None:
        raise ValueError("cannot fold a BatchNorm without running statistics")
    fused = copy.deepcopy(conv)
    scale = torch.rsqrt(bn.running_var.double() + bn.eps)
    if bn.affine:
        scale = scale * bn.weight.double()
    shift = -bn.running_mean.double() * scale
    if bn.affine:
        shift = shift + bn.bias.double()
    weight = conv.weight.double() * scale.reshape(-1, *([1] * (conv.weight.ndim - 1)))
    bias = conv.bias.double() * scale + shift if conv.bias is not None else shift
    fused.weight = nn.Parameter(weight.to(conv.weight.dtype), requires_grad=False)
    fused.bias = nn.Parameter(bias.to(conv.weight.dtype), requires_grad=False)
    return fused


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (put in eval mode) with every conv -> BatchNorm pair folded."""
    folded = copy.deepcopy(model).eval()
    count = 0
    for module in folded.modules():
        for conv_name, bn_name in PAIRS:
            conv, bn = getattr(module, conv_name, None), getattr(module, bn_name, None)
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                setattr(module, conv_name, fold_conv_bn(conv, bn))
                setattr(module, bn_name, nn.Identity())
                count += 1
    folded.folded_batchnorms = count  # type: ignore[assignment]
    return folded
