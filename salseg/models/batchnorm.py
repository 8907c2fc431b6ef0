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
frozen BatchNorm statistics: :func:`freeze_batchnorm` replaces every BatchNorm by a
:class:`FrozenBatchNorm2d`, which always normalises with the running statistics and never
updates them, whatever its ``training`` flag; its affine parameters still train.

The freeze is structural, not a mode: Lightning (>= 2.2) does not call ``LightningModule.train()``
when fitting starts and restores every submodule's ``training`` flag after validation, so a
``train()`` override that puts BatchNorm in eval mode never runs inside ``Trainer.fit`` (issue
18: every BatchNorm of a folded import trained on batch statistics).  A frozen module also
survives ``sync_batchnorm`` (it is not a ``_BatchNorm``, so it is not converted), DDP, resume
and ``torch.compile``.  Its state-dict keys are BatchNorm's, so checkpoints are unchanged.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
import torch.nn.functional as F
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


class FrozenBatchNorm2d(nn.Module):
    """A BatchNorm2d in permanent eval mode: ``y = (x - running_mean) / sqrt(running_var + eps)
    * weight + bias`` with the running statistics fixed (never updated) and ``weight``/``bias``
    trainable.  Same parameters, buffers and state-dict keys as :class:`torch.nn.BatchNorm2d`.
    ``training`` follows ``train()``/``eval()`` like any module's but changes nothing."""

    affine = True
    track_running_stats = True

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1) -> None:
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    @classmethod
    def from_batchnorm(cls, bn: nn.modules.batchnorm._BatchNorm) -> FrozenBatchNorm2d:
        """A frozen module sharing ``bn``'s parameters and buffers (same tensors)."""
        if not (bn.affine and bn.track_running_stats):
            raise ValueError("only affine BatchNorms with running statistics can be frozen")
        frozen = cls(bn.num_features, bn.eps, bn.momentum).train(bn.training)
        frozen.weight, frozen.bias = bn.weight, bn.bias
        frozen.running_mean, frozen.running_var = bn.running_mean, bn.running_var
        frozen.num_batches_tracked = bn.num_batches_tracked
        return frozen

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # type: ignore[override]
        # like BatchNorm: old checkpoints without the counter load (it keeps its value)
        state_dict.setdefault(prefix + "num_batches_tracked", self.num_batches_tracked.clone())
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            training=False, momentum=0.0, eps=self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, frozen statistics"


def freeze_batchnorm(module: nn.Module) -> int:
    """Replace every BatchNorm of ``module`` (in place) by a :class:`FrozenBatchNorm2d` sharing
    its tensors; return how many are frozen.  Idempotent."""
    count = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.modules.batchnorm._BatchNorm):
                setattr(parent, name, FrozenBatchNorm2d.from_batchnorm(child))
                count += 1
            elif isinstance(child, FrozenBatchNorm2d):
                count += 1
    return count


def batchnorm_buffers(module: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the running statistics and counters of every (frozen or live) BatchNorm."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()
            if k.rsplit(".", 1)[-1] in ("running_mean", "running_var", "num_batches_tracked")}


# -- folding for inference ----------------------------------------------------------------------
PAIRS = (("conv_s1", "bn_s1"), ("conv", "bn"))


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d | FrozenBatchNorm2d) -> nn.Conv2d:
    """A new convolution equal to ``bn(conv(x))`` with ``bn`` in eval mode."""
    if bn.running_mean is None or bn.running_var is None:
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
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d | FrozenBatchNorm2d):
                setattr(module, conv_name, fold_conv_bn(conv, bn))
                setattr(module, bn_name, nn.Identity())
                count += 1
    folded.folded_batchnorms = count  # type: ignore[assignment]
    return folded
