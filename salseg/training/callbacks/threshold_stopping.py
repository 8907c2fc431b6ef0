"""``ThresholdStopping``: stop training once a monitored metric passes a threshold.

Reproduces the official IS-Net phase-1 stopping rule: the GT encoder is considered trained once
the max-F of its side 1 on the training masks exceeds 0.99 (``get_gt_encoder``,
OFFICIAL_NOTES §3.2).  The comparison is strict (``>``), as in the official code.
"""
from __future__ import annotations

import lightning as L
from lightning.pytorch.utilities import rank_zero_info


class ThresholdStopping(L.Callback):
    def __init__(self, monitor: str = "val/maxF", threshold: float = 0.99, mode: str = "max") -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        self.monitor, self.threshold, self.mode = monitor, threshold, mode
        self.reached = False
        self.reached_value: float | None = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        value = float(value)
        passed = value > self.threshold if self.mode == "max" else value < self.threshold
        if passed:
            self.reached, self.reached_value = True, value
            trainer.should_stop = True
            rank_zero_info(f"{self.monitor} = {value:.4f} passed {self.threshold}: stopping")
