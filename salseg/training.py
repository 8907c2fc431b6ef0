"""The training pipeline behind ``salseg-train``: build everything from a Hydra config and fit.

* ``train(cfg)`` seeds every process, instantiates the datamodule, task (``cfg.model``), trainer,
  callbacks and loggers, fits (resuming from ``cfg.ckpt_path`` with full state if given) and
  returns the best validation max-F.
* A model whose card names a GT encoder (IS-Net) with feature synchronisation and no
  ``model.gt_encoder_ckpt`` first runs phase 1 (the GT encoder, validated on the training
  masks, stopped by the official maxF > 0.99 rule) into ``<run>/gt_encoder/`` and then phase 2
  with that checkpoint.
Only rank 0 writes summaries; Lightning's loggers and checkpoints are rank-0-only already.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

from salseg.atomic import write_text_atomic

log = logging.getLogger("salseg.train")
PIPELINE_KEYS = ("gt_encoder",)  # model-config keys read by the pipeline, not the task


def run_dir() -> Path:
    try:
        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:  # not under Hydra (tests calling train() directly)
        return Path(os.getcwd())


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


def task_config(model_cfg: DictConfig) -> DictConfig:
    cfg = OmegaConf.create(OmegaConf.to_container(model_cfg, resolve=True))
    with open_dict(cfg):
        for key in PIPELINE_KEYS:
            cfg.pop(key, None)
    return cfg


def needs_phase1(cfg: DictConfig) -> bool:
    model = cfg.model
    from salseg.models.card import get_card

    return (get_card(str(model.get("name"))).gt_encoder is not None
            and bool(model.get("feature_sync", False))
            and not model.get("gt_encoder_ckpt") and cfg.get("ckpt_path") is None)


def make_trainer(cfg: DictConfig, out_dir: Path, logger_name: str | None = None,
                 **overrides: Any) -> L.Trainer:
    callbacks = instantiate_list(cfg.get("callbacks"))
    for cb in callbacks:
        if isinstance(cb, ModelCheckpoint):
            cb.dirpath = str(out_dir / "checkpoints")
    # phase 1 logs beside phase 2, under its own name
    loggers = instantiate_list(cfg.get("logger"), **({"name": logger_name} if logger_name else {}))
    if not loggers:  # LearningRateMonitor refuses to run without a logger
        callbacks = [cb for cb in callbacks if not isinstance(cb, LearningRateMonitor)]
    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    trainer_cfg.update({k: v for k, v in overrides.items() if v is not None})
    return instantiate(trainer_cfg, callbacks=callbacks, logger=loggers or False,
                       _convert_="partial")


def train_gt_encoder(cfg: DictConfig, out: Path) -> Path:
    """IS-Net phase 1 into ``out/gt_encoder``; returns the GT encoder checkpoint."""
    phase_dir = out / "gt_encoder"
    log.info("IS-Net phase 1: training the GT encoder into %s", phase_dir)
    g = cfg.model.gt_encoder
    task_cfg = OmegaConf.create(OmegaConf.to_container(g, resolve=True))
    with open_dict(task_cfg):
        max_epochs = task_cfg.pop("max_epochs", None)
    datamodule = instantiate(cfg.data, mask_only=True)
    task = instantiate(task_cfg, input_size=list(datamodule.input_size), _convert_="all")
    datamodule.setup("fit")  # official: validate the GT encoder on the training masks (no flip)
    datamodule.val_pairs = list(datamodule.train_pairs)
    trainer = make_trainer(cfg, phase_dir, logger_name="gt_encoder", max_epochs=max_epochs)
    trainer.fit(task, datamodule=datamodule)
    ckpt = phase_dir / "gt_encoder.ckpt"
    trainer.save_checkpoint(ckpt, weights_only=True)
    reached = any(getattr(cb, "reached", False) for cb in trainer.callbacks)
    if not reached:
        log.warning("GT encoder stopped before its maxF passed %s (the official script would exit "
                    "here); continuing with the last weights: %s", g.get("stop_max_f"), ckpt)
    return ckpt


def train(cfg: DictConfig) -> float | None:
    """Fit ``cfg.model`` on ``cfg.data``; return the best ``val/maxF`` (or None without val)."""
    L.seed_everything(cfg.get("seed"), workers=True)
    out = run_dir()
    if needs_phase1(cfg):
        ckpt = train_gt_encoder(cfg, out)
        with open_dict(cfg):
            cfg.model.gt_encoder_ckpt = str(ckpt)
        L.seed_everything(cfg.get("seed"), workers=True)
    datamodule = instantiate(cfg.data)
    task = instantiate(task_config(cfg.model), input_size=list(datamodule.input_size),
                       _convert_="all")
    trainer = make_trainer(cfg, out)
    trainer.fit(task, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    best = None
    ckpt_cb = trainer.checkpoint_callback
    if ckpt_cb is not None and ckpt_cb.best_model_score is not None:
        best = float(ckpt_cb.best_model_score)
    elif ckpt_cb is not None and ckpt_cb.best_model_path:  # ddp_spawn returns only the path
        best = checkpoint_score(ckpt_cb.best_model_path)
    if cfg.get("test"):
        trainer.test(task, datamodule=datamodule, ckpt_path="best" if best is not None else None)
    write_summary(out, trainer, best, cfg)
    return best


def checkpoint_score(path: str) -> float | None:
    """The ModelCheckpoint score stored in one of our own Lightning checkpoints."""
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    for key, value in state.get("callbacks", {}).items():
        if key.startswith("ModelCheckpoint") and value.get("best_model_score") is not None:
            return float(value["best_model_score"])
    return None


def last_checkpoint(ckpt_cb: ModelCheckpoint | None) -> str | None:
    if ckpt_cb is None:
        return None
    if ckpt_cb.last_model_path:
        return ckpt_cb.last_model_path
    candidate = Path(ckpt_cb.dirpath or ".") / "last.ckpt"  # ddp_spawn: paths stay in the workers
    return str(candidate) if candidate.is_file() else None


@rank_zero_only
def write_summary(out: Path, trainer: L.Trainer, best: float | None, cfg: DictConfig) -> None:
    ckpt_cb = trainer.checkpoint_callback
    summary = {
        "model": str(cfg.model.name),
        "best_val_maxF": best,
        "best_checkpoint": getattr(ckpt_cb, "best_model_path", None) or None,
        "last_checkpoint": last_checkpoint(ckpt_cb),
        "global_step": trainer.global_step,
        "epochs": trainer.current_epoch,
        "metrics": {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1},
    }
    # a resumed run updates the summary of the run it continues
    write_text_atomic(json.dumps(summary, indent=2), out / "train_summary.json", overwrite=True)
