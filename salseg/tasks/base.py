"""``SegmentationTask``: the LightningModule shared by every salseg model.

It only wires things together: a model from ``salseg.models`` (optionally initialised from any
checkpoint, converted to ``channels_last`` and/or compiled), an optimizer and scheduler given as
Hydra ``_partial_`` objects, validation metrics from ``salseg.metrics`` computed at the
ground truth's original resolution, and TensorBoard logging of every loss term and of image grids
(input / GT / prediction).  Subclasses define ``compute_loss``.  Its options are the typed
records of :mod:`salseg.tasks.options`; the checkpoint keeps them flat (``hyper_parameters``).

Validation (conventions ``u2net`` and ``dis``) scores exactly the maps ``salseg-predict`` would
save: the datamodule prepares the inputs with the card's ``Preprocessor``, and each prediction
is restored to the GT's resolution by :func:`salseg.models.restore.restore_alpha` (the
card's ``restore`` mode, min-max normalisation) and quantised to 8 bits, so ``val/maxF`` and
``val/mae`` equal ``salseg-eval`` model mode's ``max_f`` and ``mae`` on the same data.  The
``dis_valid`` convention keeps the official IS-Net ``valid()`` (float maps, bilinear).

Validation loaders are logged under the datamodule's ``val_loader_prefixes``: ``val/...`` for
the selection data, ``test_monitor/<set>/...`` for test sets watched for information only.

``freeze_bn`` freezes every BatchNorm of the network for training (running statistics used,
not updated; affine parameters still train): the BatchNorms are replaced by
:class:`salseg.models.batchnorm.FrozenBatchNorm2d`, because Lightning does not call ``train()``
at fit start and restores each submodule's mode after validation, so a mode set in a
``train()`` override does not hold inside ``Trainer.fit``.  ``"auto"`` (default) does so when
the initial weights have folded (identity) BatchNorm statistics, as imported from ONNX graphs
such as rembg's files or model-zoo ONNX sources, where train-mode BatchNorm would destroy the
pretrained function; ``true`` always (small-batch fine-tuning); ``false`` never, and refuses
folded initial weights.

Per-step overhead (docs/performance.md): ``activation_checkpointing`` recomputes the RSU
blocks' activations in the backward pass (:mod:`salseg.models.checkpointing`);
``fused_optimizer`` (default: on CUDA) builds Adam/AdamW with ``fused=True``;
``compile`` takes ``true`` or a ``torch.compile`` mode (``reduce-overhead``: CUDA graphs);
``progress_bar_loss`` (default: off on CUDA) shows the step loss in the progress bar, which
makes Lightning convert it to a Python number — a host sync — at every step.
"""
from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from salseg.models.batchnorm import freeze_batchnorm, has_folded_batchnorm
from salseg.models.card import get_card
from salseg.models.checkpointing import enable_activation_checkpointing
from salseg.models.restore import DEFAULT_NORMALIZATION, restore_alpha, to_uint8
from salseg.tasks.options import InitOptions, TaskOptions
from salseg.tasks.validation import PREDICT_RESTORED, build_val_metrics
from salseg.tasks.visualize import prediction_grid
from salseg.weights.load import load_weights

log = logging.getLogger(__name__)


class SegmentationTask(L.LightningModule):
    """Base task: model + optimizer + validation metrics + logging, made from
    :class:`~salseg.tasks.options.TaskOptions` (``self.options``)."""

    def __init__(self, options: TaskOptions) -> None:
        super().__init__()
        self.options = options
        # flat, as the config: ``name`` and ``input_size`` (the training/eval resolution) travel
        # in the checkpoint, so that eval and predict use the same preprocessing as training
        self.save_hyperparameters(options.flat(exclude=("optimizer", "scheduler")))
        init, speed = options.init, options.speed
        self.card = get_card(options.name)
        self.name = self.card.name
        self.spec = self.card.preprocessing
        self.model = self.card.build(**(options.net_kwargs or {}))
        if init.weights:
            load_weights(self.model, init.weights, name=self.name)
        self.freeze_bn = self._decide_freeze_bn(init)
        if self.freeze_bn:
            freeze_batchnorm(self.model)
        self.optimizer_factory = options.optim.optimizer
        self.scheduler_factory = options.optim.scheduler
        self.channels_last = speed.channels_last
        if speed.channels_last:
            self.model.to(memory_format=torch.channels_last)
        if speed.activation_checkpointing:
            enable_activation_checkpointing(self.model)
        # Compiled forward kept outside the module tree, so state-dict keys stay official.
        self._compiled: list[Callable] = (
            [torch.compile(self.model, mode=speed.compile_mode)] if speed.compile is not False else [])
        self.val_metrics = build_val_metrics(options.val_convention)

    # ------------------------------------------------------------------ model
    def _decide_freeze_bn(self, init: InitOptions) -> bool:
        mode, init_weights = init.freeze_bn_mode, init.weights
        folded = bool(init_weights) and has_folded_batchnorm(self.model.state_dict())
        if mode == "false" and folded:
            raise ValueError(
                f"{init_weights}: the BatchNorm statistics of these weights are folded into the "
                "convolutions (identity BatchNorms, e.g. imported from ONNX); training BatchNorm "
                "on batch statistics would destroy the pretrained function. Use "
                "model.freeze_bn=auto (or true), or initialise from the original .pth")
        if mode == "auto" and folded:
            log.info("%s: folded BatchNorm statistics detected; BatchNorm statistics stay frozen "
                     "during training (model.freeze_bn=auto)", init_weights)
        return mode == "true" or folded

    def forward(self, x: torch.Tensor) -> Any:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self._compiled[0](x) if self._compiled else self.model(x)

    def model_input(self, batch: dict) -> torch.Tensor:
        return batch["image"]

    def compute_loss(self, batch: dict, outputs: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    # --------------------------------------------------------------- training
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        outputs = self(self.model_input(batch))
        loss, terms = self.compute_loss(batch, outputs)
        bs = batch["mask"].shape[0]
        pbar = self.options.speed.progress_bar_loss
        pbar = self.device.type != "cuda" if pbar is None else bool(pbar)
        self.log("train/loss", loss, prog_bar=pbar, batch_size=bs)
        self.log_dict({f"train/{k}": v.detach() for k, v in terms.items()}, batch_size=bs)
        every = self.options.images.log_images_every_n_steps
        if every and self.global_step % every == 0:
            self._log_grid("train/images", batch, outputs)
        return loss

    def _encoder_frozen(self) -> bool:
        return self.current_epoch < self.options.init.freeze_encoder_epochs

    def _encoder_parameters(self) -> list[nn.Parameter]:
        return [p for k, p in self.model.named_parameters() if k.startswith(self.card.encoder_prefixes)]

    def on_train_epoch_start(self) -> None:
        # ``freeze_encoder_epochs``: the encoder's parameters do not change in the first epochs.
        # One process: they stop requiring gradients (autograd skips the encoder's backward).
        # Several (DDP): the reducer expects a gradient for every parameter that required one
        # when it was built, so they keep requiring gradients, which are dropped before the
        # optimizer step (:meth:`on_before_optimizer_step`).
        distributed = self._trainer is not None and self.trainer.world_size > 1
        frozen = self._encoder_frozen()
        for param in self._encoder_parameters():
            param.requires_grad_(distributed or not frozen)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self._encoder_frozen():
            for param in self._encoder_parameters():
                param.grad = None  # Adam skips parameters without a gradient

    # ------------------------------------------------------------- validation
    def _val_prefixes(self) -> list[str]:
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer else None
        return list(getattr(datamodule, "val_loader_prefixes", None) or ["val"])

    def on_validation_epoch_start(self) -> None:
        # one metric per validation loader: ``val`` first, then the test-monitor sets
        self._val_sets = {prefix: self.val_metrics if i == 0 else
                          build_val_metrics(self.options.val_convention).to(self.device)
                          for i, prefix in enumerate(self._val_prefixes())}

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        sets = getattr(self, "_val_sets", None) or {"val": self.val_metrics}
        metrics = list(sets.values())[dataloader_idx]
        outputs = self(self.model_input(batch))
        prob = torch.sigmoid(self.card.outputs(outputs).prediction.float())
        gts: Sequence[torch.Tensor] = batch.get("gt") or list(batch["mask"])
        as_predicted = self.options.val_convention in PREDICT_RESTORED and "gt" in batch
        for p, gt in zip(prob, gts):
            gt = gt.to(p.device).float()
            if gt.ndim == 2:
                gt = gt[None]
            if as_predicted:  # exactly the map salseg-predict saves (restore, 8 bits)
                alpha = restore_alpha(p, tuple(gt.shape[-2:]), self.spec,
                                      self.spec.normalization or DEFAULT_NORMALIZATION)
                p = torch.from_numpy(to_uint8(alpha)).to(p.device)[None]
                gt = torch.round(gt * 255).to(torch.uint8)  # the stored 8-bit levels, as read
            elif p.shape[-2:] != gt.shape[-2:]:
                p = F.interpolate(p[None], size=gt.shape[-2:], mode="bilinear", align_corners=False)[0]
            metrics.update(p if as_predicted else p.clamp(0, 1), gt)
        if batch_idx == 0 and dataloader_idx == 0:
            self._log_grid("val/images", batch, outputs)

    def on_validation_epoch_end(self) -> None:
        sets = getattr(self, "_val_sets", None) or {"val": self.val_metrics}
        for prefix, metrics in sets.items():
            values = metrics.compute()
            metrics.reset()
            selection = prefix == "val"
            self.log(f"{prefix}/maxF", values["max_f"], prog_bar=selection, sync_dist=False)
            self.log(f"{prefix}/mae", values["mae"], prog_bar=selection, sync_dist=False)

    # -------------------------------------------------------------- optimizer
    def configure_optimizers(self) -> Any:
        factory = self.optimizer_factory or functools.partial(
            torch.optim.Adam, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0)
        optimizer = factory(self.optimizer_params(factory), **self._fused_kwargs(factory))
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": self.options.optim.scheduler_interval}}

    def optimizer_params(self, factory: Callable) -> list:
        """The parameters (or parameter groups) given to the optimizer."""
        return list(self.model.parameters())

    def _fused_kwargs(self, factory: Callable) -> dict:
        """``{"fused": True}`` for Adam/AdamW on CUDA (one kernel for all parameters) unless the
        config sets ``fused``/``foreach`` itself or ``fused_optimizer=false``."""
        fused = self.options.speed.fused_optimizer
        if fused is None:
            fused = self.device.type == "cuda"
        cls = getattr(factory, "func", factory)
        given = getattr(factory, "keywords", {}) or {}
        if not fused or cls not in (torch.optim.Adam, torch.optim.AdamW):
            return {}
        if "fused" in given or "foreach" in given:
            return {}
        return {"fused": True}

    # ---------------------------------------------------------------- logging
    def _log_grid(self, tag: str, batch: dict, outputs: Any) -> None:
        logger = self.logger
        experiment = getattr(logger, "experiment", None) if logger is not None else None
        if experiment is None or not hasattr(experiment, "add_image") or self.global_rank != 0:
            return
        with torch.no_grad():
            prob = torch.sigmoid(self.card.outputs(outputs).prediction.detach().float())
            grid = prediction_grid(self.model_input(batch).detach(), batch["mask"].detach(), prob,
                                   self.spec, self.options.images.num_log_images)
        experiment.add_image(tag, grid, self.global_step)


def frozen(module: nn.Module) -> nn.Module:
    """Freeze all parameters of ``module`` (BatchNorm statistics are governed by its mode)."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module
