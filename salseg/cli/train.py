"""``salseg-train`` / ``python train.py``: Hydra entry point for training (docs/training.md).

``python train.py model=isnet`` without ``model.gt_encoder_ckpt`` runs IS-Net's two phases in one
command: phase 1 trains the GT encoder (``model.gt_encoder``) until its stopping rule, saves
``gt_encoder/gt_encoder.ckpt`` in the run directory, then phase 2 trains IS-Net against it.
"""
from __future__ import annotations

import hydra
from omegaconf import DictConfig

from salseg.config import CONFIG_DIR
from salseg.training import train


@hydra.main(config_path=str(CONFIG_DIR), config_name="train", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> float | None:
    return train(cfg)


def main() -> None:
    _hydra_main()


__all__ = ["main"]
