"""``GTEncoderTask`` and ``ISNetTask``: the names older configs and checkpoints use for IS-Net's
two training phases (DIS paper §4, official ``train_valid_inference_main.py``).

Both are the one training task, :class:`salseg.tasks.TrainingTask`, with the card's default
loss: phase 1 (``isnet_gt_encoder``, a card that takes masks) the 6 side BCEs and the official
stopping rule (max-F > 0.99 on the training masks); phase 2 (``isnet``) the 6 side BCEs plus
the MSE between the network's 6 features and the frozen GT encoder's.  These subclasses only
map the old keywords (``loss_weights``, ``sync_weights``, ``sync_mode``) onto the terms.
Phase 2's speed options (``fused_loss``, ``sync_dtype``; issue 24) are those of the training
task.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from salseg.tasks.generic import BN_MODES, TrainingTask
from salseg.tasks.u2net import with_weights

__all__ = ["BN_MODES", "GTEncoderTask", "ISNetTask"]


class GTEncoderTask(TrainingTask):
    """Phase 1: the ground-truth encoder learns to reconstruct masks from masks."""

    def __init__(self, name: str = "isnet_gt_encoder", loss_weights: Sequence[float] | None = None,
                 stop_max_f: float | None = 0.99, **kwargs: Any) -> None:
        kwargs["loss"] = with_weights(kwargs.get("loss"), name, "bce", weight=loss_weights)
        super().__init__(name=name, stop_max_f=stop_max_f, **kwargs)


class ISNetTask(TrainingTask):
    """Phase 2: IS-Net with feature synchronisation to a frozen GT encoder."""

    def __init__(self, name: str = "isnet", loss_weights: Sequence[float] | None = None,
                 sync_weights: Sequence[float] | None = None, sync_mode: str | None = None,
                 **kwargs: Any) -> None:
        loss = with_weights(kwargs.get("loss"), name, "bce", weight=loss_weights)
        kwargs["loss"] = with_weights(loss, name, "sync", weight=sync_weights, mode=sync_mode)
        super().__init__(name=name, **kwargs)
