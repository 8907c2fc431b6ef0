"""Training phases that run before the main fit: IS-Net phase 1, the GT encoder.

A model whose card names a GT encoder, trained with feature synchronisation and without a
``model.gt_encoder_ckpt``, first trains the GT encoder (``model.gt_encoder``) on the masks alone,
validated on the training masks (the masks-only mode of the datamodule, ``data.mask_only``) and
stopped by the official maxF > 0.99 rule, into ``<run>/gt_encoder/``; the main fit then starts
from that checkpoint (OFFICIAL_NOTES §3.2).
"""
from __future__ import annotations

import logging
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from salseg.models.card import get_card
from salseg.training.trainer import make_trainer

log = logging.getLogger("salseg.train")


def needs_phase1(cfg: DictConfig) -> bool:
    model = cfg.model
    return (get_card(str(model.get("name"))).gt_encoder is not None
            and bool(model.get("feature_sync", False))
            and not model.get("gt_encoder_ckpt") and cfg.get("ckpt_path") is None)


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
    trainer = make_trainer(cfg, phase_dir, logger_name="gt_encoder", max_epochs=max_epochs)
    trainer.fit(task, datamodule=datamodule)
    ckpt = phase_dir / "gt_encoder.ckpt"
    trainer.save_checkpoint(ckpt, weights_only=True)
    reached = any(getattr(cb, "reached", False) for cb in trainer.callbacks)
    if not reached:
        log.warning("GT encoder stopped before its maxF passed %s (the official script would exit "
                    "here); continuing with the last weights: %s", g.get("stop_max_f"), ckpt)
    return ckpt
