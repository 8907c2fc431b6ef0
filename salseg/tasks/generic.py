"""``TrainingTask``: the one training task of every card (its loss is configuration).

The loss is ``model.loss``, a list of terms (:mod:`salseg.losses.terms`); without one, the
card's default (``ModelCard.loss``).  The task reads the raw forward through the card
(``card.read``: sides, features, named auxiliary outputs, all named by the card), so the logged
term names are the card's output names (``train/bce_fused``, ``train/bce_side1``, ...).

* ``loss_form`` (``logits`` default, ``official`` = ``nn.BCELoss`` on sigmoid outputs, fp32
  only; :mod:`salseg.losses.bce`) is the form of every BCE term that names none.
* A card that takes masks (``takes_masks``: the IS-Net GT encoder, phase 1 of IS-Net) gets the
  mask as its input; ``stop_max_f`` adds the official stopping rule (validation max-F above it,
  :class:`salseg.training.callbacks.ThresholdStopping`).
* Terms with ``target: gt_encoder`` (IS-Net feature synchronisation, phase 2) compare the
  network's features with those of the card's ``gt_encoder``, loaded frozen from
  ``gt_encoder_ckpt``.  The official code leaves that encoder in ``train()`` mode, so its
  BatchNorm layers use batch statistics and keep updating their running statistics —
  ``gt_encoder_bn="train"`` (default, re-asserted at every training step: Lightning does not
  call ``train()`` when fitting starts); ``"eval"`` uses the running statistics, with the
  encoder's BatchNorms frozen structurally (:func:`salseg.models.batchnorm.freeze_batchnorm`),
  so no mode switch of Lightning's (validation, sanity check, resume) can put them back on
  batch statistics.  ``feature_sync=False`` drops those terms (the released script's default,
  ``interm_sup=False``).
* Speed options (issue 24; off by default, measured by ``benchmarks/bench_train.py``):
  ``fused_loss`` (every BCE term's maps in one call) and ``sync_dtype`` (``bfloat16``: the
  feature-sync distances on bf16 features); they set the terms' ``fused`` / ``dtype`` keys.
* Terms with a ``finetune`` schedule read the epoch and ``trainer.max_epochs``.
* ``backbone_weights`` starts the card's backbone (``backbone_prefixes``) from pretrained
  weights: a source name of its backbone record (``imagenet``), a URL or a file
  (:func:`salseg.weights.load_backbone_weights`: key-mapped, strict on the backbone's keys);
  not together with ``init_weights`` (which holds the whole network).
* The optimizer gets two parameter groups when the card names ``backbone_prefixes`` and a
  ``backbone_lr_mult`` other than 1 (``model.backbone_lr_mult`` overrides the card's).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from salseg.losses.terms import LossTerms, parse_loss
from salseg.models.batchnorm import freeze_batchnorm
from salseg.models.card import get_card
from salseg.tasks.base import SegmentationTask, frozen
from salseg.tasks.options import task_options
from salseg.training.callbacks import ThresholdStopping
from salseg.weights.backbone import load_backbone_weights
from salseg.weights.load import load_weights

GT_ENCODER = "gt_encoder"


class TrainingTask(SegmentationTask):
    """A card's network trained with configured loss terms (see the module docstring).

    The keywords are the flat ``model.<key>`` of the configs; :func:`salseg.tasks.options.task_options`
    sorts them into typed records (``self.options``) and refuses unknown ones."""

    def __init__(self, name: str, loss: Mapping[str, Any] | Sequence[Any] | None = None,
                 **options: Any) -> None:
        super().__init__(task_options(name=name, loss=loss, **options))
        opts = self.options
        if opts.init.backbone_weights:
            load_backbone_weights(self.model, self.card, str(opts.init.backbone_weights))
        terms = parse_loss(self.card.loss if loss is None else loss, form=opts.loss_form,
                           fused=opts.speed.fused_loss, sync_dtype=opts.speed.sync_dtype)
        if not opts.gt_encoder.feature_sync:
            terms = [t for t in terms if t.target != GT_ENCODER]
        self.criterion = LossTerms(terms)
        self.stop_max_f = opts.stop_max_f
        mult = opts.optim.backbone_lr_mult
        self.backbone_lr_mult = float(self.card.backbone_lr_mult if mult is None else mult)
        self.gt_encoder = None
        if GT_ENCODER in self.criterion.needs:
            self.gt_encoder = self._load_gt_encoder(opts.gt_encoder.gt_encoder_ckpt)

    def _load_gt_encoder(self, ckpt: str | None) -> torch.nn.Module:
        if self.card.gt_encoder is None:
            raise ValueError(f"{self.name} names no GT encoder on its model card: drop the "
                             "terms with target gt_encoder (model.feature_sync=false)")
        if not ckpt:
            raise ValueError(
                "feature synchronisation needs a trained GT encoder: set "
                "model.gt_encoder_ckpt=PATH (phase 1 checkpoint), let `python train.py "
                f"model={self.name}` run phase 1 first, or use model.feature_sync=false")
        encoder = get_card(self.card.gt_encoder)
        module = frozen(encoder.build())
        load_weights(module, ckpt, name=encoder.name)
        if self.options.gt_encoder.gt_encoder_bn == "eval":
            freeze_batchnorm(module)
            module.eval()
        return module

    def optimizer_params(self, factory: Any) -> list:
        """Two parameter groups when the card names backbone parameters and their learning
        rate differs (``backbone_lr_mult``, from the card unless given): the backbone at
        ``lr * mult``, the rest at the optimizer's ``lr``."""
        prefixes = self.card.backbone_prefixes
        if not prefixes or self.backbone_lr_mult == 1.0:
            return super().optimizer_params(factory)
        lr = (getattr(factory, "keywords", None) or {}).get("lr")
        if lr is None:
            raise ValueError("model.backbone_lr_mult needs model.optimizer.lr")
        backbone = [p for k, p in self.model.named_parameters() if k.startswith(prefixes)]
        rest = [p for k, p in self.model.named_parameters() if not k.startswith(prefixes)]
        return [{"params": rest}, {"params": backbone, "lr": lr * self.backbone_lr_mult}]

    def configure_callbacks(self) -> list:
        """The official GT-encoder stopping rule: validation max-F above ``stop_max_f``."""
        if self.stop_max_f is None:
            return []
        return [ThresholdStopping(monitor="val/maxF", threshold=self.stop_max_f)]

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # official: the frozen encoder runs in train() mode (batch statistics); Lightning does not
        # call train() when fitting starts, so the mode is set here, where it cannot be missed
        super().on_train_batch_start(batch, batch_idx)
        if self.gt_encoder is not None and self.options.gt_encoder.gt_encoder_bn == "train":
            self.gt_encoder.train()

    def model_input(self, batch: dict) -> torch.Tensor:
        return batch["mask"] if self.card.takes_masks else batch["image"]

    def loss_targets(self, batch: dict) -> dict[str, Any]:
        target = batch["mask"]
        targets: dict[str, Any] = {"mask": target}
        if self.gt_encoder is not None:
            with torch.no_grad():
                dtype = next(self.gt_encoder.parameters()).dtype
                read = get_card(self.card.gt_encoder).read(self.gt_encoder(target.to(dtype)))
            targets[GT_ENCODER] = read.features
        return targets

    def compute_loss(self, batch: dict, outputs: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        trainer = self._trainer
        max_epochs = getattr(trainer, "max_epochs", None) if trainer is not None else None
        return self.criterion(self.card.read(outputs), self.loss_targets(batch),
                              epoch=self.current_epoch, max_epochs=max_epochs)
