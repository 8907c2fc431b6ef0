"""``salseg-train`` / ``python train.py``: Hydra entry point for training (docs/training.md).

``python train.py model=isnet`` without ``model.gt_encoder_ckpt`` runs IS-Net's two phases in one
command: phase 1 trains the GT encoder (``model.gt_encoder``) until its stopping rule, saves
``gt_encoder/gt_encoder.ckpt`` in the run directory, then phase 2 trains IS-Net against it.

Ordinary mistakes (a bad config value, missing or invalid data, an unusable checkpoint, a run
directory that holds another run) end with one line ``salseg-train: error: ...`` and exit code
2; ``debug_traceback=true`` or ``SALSEG_DEBUG=1`` shows the traceback instead.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from salseg.cli.errors import debug_enabled, report, run_hydra, user_error
from salseg.config import CONFIG_DIR
from salseg.training import train
from salseg.training.checks import ConfigError, check_run_dir

PROG = "salseg-train"


@hydra.main(config_path=str(CONFIG_DIR), config_name="train", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> float | None:
    try:
        return train(cfg)
    except Exception as err:
        found = user_error(err)
        if found is None or debug_enabled() or cfg.get("debug_traceback"):
            raise
        sys.exit(report(PROG, found, exc=err))


class RunDirGuard(Callback):
    """Hydra callback (``configs/train.yaml``): :func:`salseg.training.checks.check_run_dir` before
    Hydra writes anything into the run directory; a refusal is this command's error line."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            out = Path(str(config.hydra.run.dir)).absolute()
            if not config.get("overwrite"):  # overwrite=true: outputs are removed in train()
                check_run_dir(out, config)
        except ConfigError as err:
            sys.exit(report(PROG, err))


def main() -> None:
    run_hydra(PROG, _hydra_main)


__all__ = ["RunDirGuard", "main"]
