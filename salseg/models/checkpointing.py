"""Activation checkpointing for training (``model.activation_checkpointing=true``).

A network says where it can be checkpointed, so this module knows no architecture:

* a module whose class sets ``checkpoint_unit = True`` (the residual U-blocks RSU-L and RSU-4F
  of U2-Net and IS-Net) is checkpointed here as a whole: it keeps only its input during the
  forward pass and recomputes its inner activations during the backward pass
  (``torch.utils.checkpoint``, non-reentrant).  This trades about one extra forward pass for
  most of the activation memory — what IS-Net needs to train at batch 8 and 1024x1024 on a
  16 GB GPU (DIS issue #65);
* a module with an ``enable_activation_checkpointing()`` method (the Swin backbone of BiRefNet,
  whose blocks take extra inputs) checkpoints its own blocks and returns how many.

BatchNorm layers in training mode would update their running statistics twice (once in the
forward, once in the recomputation); the recomputation therefore runs with ``momentum = 0``
(running statistics unchanged, ``num_batches_tracked`` restored), so a checkpointed step
leaves exactly the same state as a plain one (tested).  The module tree and state-dict keys
do not change: the blocks' ``forward`` is wrapped per instance.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


@contextlib.contextmanager
def _frozen_bn_stats(module: nn.Module) -> Iterator[None]:
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.num_batches_tracked.clone() if m.num_batches_tracked is not None
              else None) for m in bns]
    for m in bns:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, tracked) in zip(bns, saved):
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)


def _wrap(block: nn.Module) -> None:
    plain = block.forward

    def contexts():
        return contextlib.nullcontext(), _frozen_bn_stats(block)

    def forward(x: torch.Tensor) -> torch.Tensor:
        if not (block.training and torch.is_grad_enabled()):
            return plain(x)
        return checkpoint(plain, x, use_reentrant=False, context_fn=contexts)

    block.forward = forward  # type: ignore[method-assign]
    block._salseg_checkpointed = True  # type: ignore[assignment]


def enable_activation_checkpointing(model: nn.Module) -> int:
    """Checkpoint every checkpoint unit of ``model`` in place (see the module docstring); return
    how many blocks are checkpointed."""
    count = 0
    for module in model.modules():
        if module is not model and callable(getattr(module, "enable_activation_checkpointing",
                                                    None)):
            count += module.enable_activation_checkpointing()
        elif getattr(type(module), "checkpoint_unit", False) and not getattr(
                module, "_salseg_checkpointed", False):
            _wrap(module)
            count += 1
    return count
