"""``StartingPoint``: the weights a fine-tuning run starts from, scored on its validation split
before the first step and kept as a checkpoint candidate (issue 18, the do-no-harm recipe of
``experiment=finetune``).

The whole validation split is scored by Lightning's sanity check (``trainer.num_sanity_val_steps
=-1``, required), i.e. by the same validation code, metrics and process group as every later
validation.  The weights are written to ``<checkpoints>/start.ckpt`` (weights only: what
``salseg-eval ckpt=`` and ``salseg-predict --weights`` read).  The training pipeline
(:mod:`salseg.training.pipeline`) reports the start instead of the best trained checkpoint when no
trained checkpoint scores at least as well, so the reported weights are never worse on
validation than the starting ones; ``train_summary.json`` records both scores.

The score is logged at every validation as ``start/<monitor>`` (e.g. ``start/val/maxF``) and
kept in the callback's state, so a resumed run keeps the score of the run's real start.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_info

from salseg.training.checks import ConfigError

START_FILE = "start.ckpt"


class StartingPoint(L.Callback):
    def __init__(self, monitor: str = "val/maxF", mode: str = "max") -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        self.monitor, self.mode = monitor, mode
        self.score: float | None = None
        self.path: str | None = None

    @property
    def log_key(self) -> str:
        return f"start/{self.monitor}"

    def better(self, trained: float | None) -> bool:
        """Whether the start beats a trained score (ties go to the trained weights)."""
        if self.score is None:
            return False
        if trained is None or math.isnan(trained):
            return True
        return self.score > trained if self.mode == "max" else self.score < trained

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.score is not None:  # resumed: the run's start was scored already
            return
        if trainer.num_sanity_val_steps != float("inf"):
            raise ConfigError(
                "callbacks.starting_point scores the starting weights on the whole validation "
                "split in Lightning's sanity check: set trainer.num_sanity_val_steps=-1 (or "
                "remove the callback with ~callbacks.starting_point)")
        if trainer.checkpoint_callback is None or not trainer.checkpoint_callback.dirpath:
            raise ConfigError("callbacks.starting_point needs a ModelCheckpoint callback "
                              "(callbacks.model_checkpoint) to write start.ckpt beside it")

    def on_sanity_check_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.score is not None:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            raise ConfigError(f"callbacks.starting_point: the validation logged no {self.monitor} "
                              "(is there a validation split? data.val_split or data.val_images)")
        self.score = float(value)
        path = Path(trainer.checkpoint_callback.dirpath) / START_FILE
        trainer.save_checkpoint(path, weights_only=True)
        self.path = str(path)
        rank_zero_info(f"starting weights: {self.monitor} = {self.score:.4f} on the validation "
                       f"split (kept as a candidate: {path})")

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking and self.score is not None:
            pl_module.log(self.log_key, self.score, sync_dist=False)

    def state_dict(self) -> dict[str, Any]:
        return {"score": self.score, "path": self.path}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.score, self.path = state_dict.get("score"), state_dict.get("path")
