"""The Lightning ``Trainer`` of a training run, built from the Hydra config.

``make_trainer(cfg, out_dir)`` instantiates the ``callbacks`` and ``logger`` groups, points
``ModelCheckpoint`` at ``<out_dir>/checkpoints``, refuses a callback that selects on a test set
watched for information only (``test_monitor/...``), drops callbacks Lightning would refuse
(``LearningRateMonitor`` without a logger, a progress bar when it is disabled), adds salseg's
model summary and writes checkpoints atomically (:mod:`salseg.training.checkpoint_io`).
Used by every phase of :mod:`salseg.training.pipeline`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, ProgressBar
from lightning.pytorch.callbacks import ModelSummary as LightningModelSummary
from omegaconf import DictConfig, OmegaConf

from salseg.quiet import silence_known_noise
from salseg.training.callbacks.model_summary import ModelSummary
from salseg.training.checkpoint_io import AtomicCheckpointIO
from salseg.training.checks import ConfigError

TEST_MONITOR = "test_monitor/"


def instantiate_list(cfg: DictConfig | None, **overrides: Any) -> list[Any]:
    """Instantiate every ``_target_`` entry of a config group (``callbacks`` / ``logger``);
    ``overrides`` replace keys that an entry has."""
    out: list[Any] = []
    if not cfg:
        return out
    for _, entry in cfg.items():
        if isinstance(entry, DictConfig) and "_target_" in entry:
            out.append(instantiate(entry, **{k: v for k, v in overrides.items() if k in entry}))
    return out


def make_trainer(cfg: DictConfig, out_dir: Path, logger_name: str | None = None,
                 **overrides: Any) -> L.Trainer:
    callbacks = instantiate_list(cfg.get("callbacks"))
    for cb in callbacks:
        if isinstance(cb, ModelCheckpoint):
            cb.dirpath = str(out_dir / "checkpoints")
        monitor = getattr(cb, "monitor", None)
        if isinstance(monitor, str) and monitor.startswith(TEST_MONITOR):
            raise ConfigError(
                f"callbacks: {type(cb).__name__} monitors {monitor}, a test set watched for "
                "information only; select on val/... (data.val or a data.val_split hold-out)")
    # phase 1 logs beside phase 2, under its own name
    loggers = instantiate_list(cfg.get("logger"), **({"name": logger_name} if logger_name else {}))
    if not loggers:  # LearningRateMonitor refuses to run without a logger
        callbacks = [cb for cb in callbacks if not isinstance(cb, LearningRateMonitor)]
    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    trainer_cfg.update({k: v for k, v in overrides.items() if v is not None})
    if trainer_cfg.get("enable_progress_bar") is False:  # else Lightning refuses the callback
        callbacks = [cb for cb in callbacks if not isinstance(cb, ProgressBar)]
    if trainer_cfg.get("enable_model_summary", True) and not any(
            isinstance(cb, LightningModelSummary) for cb in callbacks):
        callbacks.append(ModelSummary())  # Lightning's, minus the FLOPs column of zeros
    silence_known_noise()
    extra = {} if trainer_cfg.get("plugins") else {"plugins": [AtomicCheckpointIO()]}
    return instantiate(trainer_cfg, callbacks=callbacks, logger=loggers or False,
                       _convert_="partial", **extra)
