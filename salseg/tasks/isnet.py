"""IS-Net training in two phases (DIS paper §4, official ``train_valid_inference_main.py``).

* ``GTEncoderTask`` (phase 1, ``model=isnet_gt_encoder``): the GT encoder is trained on the
  masks alone (input = target = the soft mask in [0, 1]); loss = sum of the 6 side BCEs.  The
  official run validates side 1 on the *training* masks and stops once its max-F exceeds 0.99
  (``salseg.callbacks.ThresholdStopping``).
* ``ISNetTask`` (phase 2, ``model=isnet``): loss = 6 side BCEs + MSE between the 6 IS-Net
  features and the frozen GT encoder's 6 features (all weights 1).  The GT encoder's parameters
  are frozen; the official code leaves the encoder in ``train()`` mode, so its BatchNorm layers
  use batch statistics and keep updating their running statistics — reproduced by
  ``gt_encoder_bn="train"`` (default, re-asserted at every training step); ``"eval"`` uses the
  running statistics instead (fixed targets): the encoder's BatchNorms are then frozen
  structurally (:func:`salseg.models.batchnorm.freeze_batchnorm`), so no mode switch of
  Lightning's (validation, sanity check, resume) can put them back on batch statistics.  ``feature_sync=False`` is the released script's default (``interm_sup=False``):
  BCE only, no GT encoder.

Speed options of phase 2 (issue 24; defaults = off, measured by ``benchmarks/bench_train.py``):
``fused_loss`` (the 6 side BCEs in one call, :class:`~salseg.losses.DeepSupervisionBCE`) and
``sync_dtype`` (``float32`` default; ``bfloat16`` computes the feature-sync distances on bf16
features instead of casting them to float32, halving their memory traffic; the sum is float32).

Both tasks take ``loss_form`` (``logits`` default, ``official`` = ``nn.BCELoss`` on sigmoid
outputs, fp32 only; :mod:`salseg.losses.bce`) for their BCE terms.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from salseg.callbacks import ThresholdStopping
from salseg.losses import DeepSupervisionBCE, FeatureSyncLoss
from salseg.models.batchnorm import freeze_batchnorm
from salseg.models.card import get_card
from salseg.models.weights import load_weights
from salseg.tasks.base import SegmentationTask, frozen

SIDE_TERMS = [f"bce_side{i}" for i in range(1, 7)]
SYNC_TERMS = [f"sync{i}" for i in range(1, 7)]
BN_MODES = ("train", "eval")
SYNC_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


class GTEncoderTask(SegmentationTask):
    """Phase 1: the ground-truth encoder learns to reconstruct masks from masks."""

    def __init__(self, name: str = "isnet_gt_encoder", loss_weights: Sequence[float] | None = None,
                 stop_max_f: float | None = 0.99, loss_form: str = "logits", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.stop_max_f = stop_max_f
        self.criterion = DeepSupervisionBCE(weights=loss_weights, form=loss_form)

    def configure_callbacks(self) -> list:
        """The official stopping rule: validation max-F of side 1 above ``stop_max_f``."""
        if self.stop_max_f is None:
            return []
        return [ThresholdStopping(monitor="val/maxF", threshold=self.stop_max_f)]

    def model_input(self, batch: dict) -> torch.Tensor:
        return batch["mask"]

    def compute_loss(self, batch: dict, outputs: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        total, terms = self.criterion(self.card.outputs(outputs).sides, batch["mask"])
        return total, dict(zip(SIDE_TERMS, terms))


class ISNetTask(SegmentationTask):
    """Phase 2: IS-Net with feature synchronisation to a frozen GT encoder."""

    def __init__(self, name: str = "isnet", feature_sync: bool = True,
                 gt_encoder_ckpt: str | None = None, gt_encoder_bn: str = "train",
                 loss_weights: Sequence[float] | None = None,
                 sync_weights: Sequence[float] | None = None, sync_mode: str = "MSE",
                 loss_form: str = "logits", fused_loss: bool = False,
                 sync_dtype: str = "float32", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        if gt_encoder_bn not in BN_MODES:
            raise ValueError(f"gt_encoder_bn must be one of {BN_MODES}, got {gt_encoder_bn!r}")
        if sync_dtype not in SYNC_DTYPES:
            raise ValueError(f"model.sync_dtype must be one of {tuple(SYNC_DTYPES)}, got {sync_dtype!r}")
        self.sync_dtype = SYNC_DTYPES[sync_dtype]
        self.criterion = DeepSupervisionBCE(weights=loss_weights, form=loss_form, fused=fused_loss)
        self.sync = FeatureSyncLoss(weights=sync_weights, mode=sync_mode) if feature_sync else None
        self.gt_encoder = None
        if feature_sync:
            if not gt_encoder_ckpt:
                raise ValueError(
                    "feature synchronisation needs a trained GT encoder: set "
                    "model.gt_encoder_ckpt=PATH (phase 1 checkpoint), let `python train.py "
                    "model=isnet` run phase 1 first, or use model.feature_sync=false")
            if self.card.gt_encoder is None:
                raise ValueError(f"{self.name} names no GT encoder on its model card: use "
                                 "model.feature_sync=false")
            encoder = get_card(self.card.gt_encoder)
            self.gt_encoder = frozen(encoder.build())
            load_weights(self.gt_encoder, gt_encoder_ckpt, name=encoder.name)
            if gt_encoder_bn == "eval":
                freeze_batchnorm(self.gt_encoder)
                self.gt_encoder.eval()

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # official: the frozen encoder runs in train() mode (batch statistics); Lightning does not
        # call train() when fitting starts, so the mode is set here, where it cannot be missed
        if self.gt_encoder is not None and self.hparams.gt_encoder_bn == "train":
            self.gt_encoder.train()

    def compute_loss(self, batch: dict, outputs: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        target = batch["mask"]
        read = self.card.outputs(outputs)
        bce_total, bce_terms = self.criterion(read.sides, target)
        terms = dict(zip(SIDE_TERMS, bce_terms))
        if self.sync is None:
            return bce_total, terms
        with torch.no_grad():
            _, gt_features = self.gt_encoder(target.to(next(self.gt_encoder.parameters()).dtype))
        dtype = self.sync_dtype
        # autocast would cast MSE's inputs back to float32: off for a bf16 distance
        with torch.autocast(target.device.type, enabled=dtype == torch.float32
                            and torch.is_autocast_enabled(target.device.type)):
            sync_total, sync_terms = self.sync([f.to(dtype) for f in read.features],
                                               [f.to(dtype) for f in gt_features])
        sync_total = sync_total.float()
        terms.update(zip(SYNC_TERMS, sync_terms))
        terms["loss_bce"], terms["loss_sync"] = bce_total, sync_total
        return bce_total + sync_total, terms
