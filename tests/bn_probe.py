"""Helpers for the fine-tuning tests through ``Trainer.fit`` (issue 18): BatchNorm-folded
weights made cheaply, and a callback that compares every training loss with the eval-mode loss
of the same batch and weights."""
from __future__ import annotations

import copy
from pathlib import Path

import lightning as L
import torch
from fixtures.predict.helpers import random_model

from salseg.models.batchnorm import batchnorm_buffers, fold_conv_bn
from salseg.models.weights import save_state_dict


def folded_model(name: str = "u2netp", seed: int = 0) -> torch.nn.Module:
    """A seeded network with its BatchNorms folded into the convolutions and left as identity
    BatchNorms: what the ONNX importer returns for a folded graph (same function in eval mode)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)  # the convolutions' initialisation draws from the global RNG
        model = random_model(name, seed=seed)
    with torch.no_grad():
        for module in model.modules():
            for conv_name, bn_name in (("conv_s1", "bn_s1"), ("conv", "bn")):
                conv, bn = getattr(module, conv_name, None), getattr(module, bn_name, None)
                if isinstance(conv, torch.nn.Conv2d) and isinstance(bn, torch.nn.BatchNorm2d):
                    fused = fold_conv_bn(conv, bn)
                    conv.weight.copy_(fused.weight)
                    if conv.bias is not None:
                        conv.bias.copy_(fused.bias)
        for bn in model.modules():
            if isinstance(bn, torch.nn.BatchNorm2d):
                bn.reset_parameters()  # weight 1, bias 0, mean 0, var 1, counter 0
    return model


def save_folded(path: Path, name: str = "u2netp", seed: int = 0) -> Path:
    return save_state_dict(folded_model(name, seed), path)


class LossProbe(L.Callback):
    """For every training step: the eval-mode loss of the batch with the weights before the step
    (a copy of the network in eval mode) and the loss the training step returned; the BatchNorm
    buffers at the start and at the end of fit.  Instances are kept in ``LossProbe.instances``
    (Hydra builds them from ``+callbacks.probe._target_=bn_probe.LossProbe``)."""

    instances: list[LossProbe] = []

    def __init__(self, compare: bool = True) -> None:
        self.compare = compare
        self.steps: list[tuple[int, float, float]] = []  # (global step, eval loss, train loss)
        self.epoch_params: list[dict[str, torch.Tensor]] = []
        self.start_buffers: dict[str, torch.Tensor] = {}
        self.start_params: dict[str, torch.Tensor] = {}
        self.end_buffers: dict[str, torch.Tensor] = {}
        self._pending: float | None = None
        LossProbe.instances.append(self)

    def on_train_start(self, trainer, pl_module) -> None:
        self.start_buffers = batchnorm_buffers(pl_module)
        self.start_params = {k: v.detach().clone() for k, v in pl_module.model.named_parameters()}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if not self.compare:
            return
        reference = copy.deepcopy(pl_module.model).eval()
        with torch.no_grad():
            outputs = reference(pl_module.model_input(batch))
            self._pending = float(pl_module.compute_loss(batch, outputs)[0])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.compare:
            self.steps.append((trainer.global_step - 1, self._pending, float(outputs["loss"])))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.epoch_params.append({k: v.detach().clone() for k, v in pl_module.model.named_parameters()})

    def on_train_end(self, trainer, pl_module) -> None:
        self.end_buffers = batchnorm_buffers(pl_module)
