"""BatchNorm folding for inference: ``conv -> BatchNorm`` pairs become one convolution.

In eval mode a BatchNorm is an affine map per channel, ``y = (x - mean) / sqrt(var + eps) *
gamma + beta``, so it can be merged into the convolution before it (weights scaled per output
channel, bias shifted).  The network then runs one kernel instead of two per ``REBNCONV`` —
what the ONNX export does through constant folding, done here for the PyTorch back-end.

:func:`fold_batchnorm` works on any module whose convolution/BatchNorm pairs are siblings
named ``conv_s1``/``bn_s1`` (``REBNCONV``) or ``conv``/``bn`` (the GT encoder's input block),
i.e. every salseg network.  It returns a **copy** (the given module keeps its state dict, so
checkpoints and training are not affected); the folded BatchNorms are replaced by
``nn.Identity``.  Only for inference: a folded network has no running statistics to update.
Outputs agree with the unfolded network to float32 rounding (tested within the parity
tolerance).
"""
from __future__ import annotations

import copy

import torch
from torch import nn

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
