"""``salseg-train`` / ``python train.py``: Hydra entry point for training (docs/training.md).

``python train.py model=isnet`` without ``model.gt_encoder_ckpt`` runs IS-Net's two phases in one
command: phase 1 trains the GT encoder (``model.gt_encoder``) until its stopping rule, saves
``gt_encoder/gt_encoder.ckpt`` in the run directory, then phase 2 trains IS-Net against it.

Ordinary mistakes (a bad config value, missing or invalid data, an unusable checkpoint, a run
directory that holds another run) end with one line ``salseg-train: error: ...`` and exit code
2; ``debug_traceback=true`` or ``SALSEG_DEBUG=1`` shows the traceback instead.
"""
from __future__ import annotations

import os
import sys

import hydra
from omegaconf import DictConfig

from salseg.config import CONFIG_DIR
from salseg.training import train


def _user_errors() -> tuple[type[BaseException], ...]:
    from salseg.checkpoint_io import CheckpointFileError
    from salseg.data.errors import DataError
    from salseg.models.weights import WeightsError
    from salseg.train_checks import ConfigError

    return (ConfigError, CheckpointFileError, DataError, WeightsError)


def _debug(cfg: DictConfig | None = None) -> bool:
    if os.environ.get("SALSEG_DEBUG", "") not in ("", "0"):
        return True
    return bool(cfg is not None and cfg.get("debug_traceback"))


def user_error(err: BaseException) -> BaseException | None:
    """The user-facing error behind ``err`` (also through Hydra's InstantiationException, which
    wraps what a config's ``_target_`` raised), or None for anything else (a bug: traceback)."""
    from hydra.errors import InstantiationException

    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, _user_errors()):
            return seen
        if isinstance(seen, InstantiationException) and isinstance(seen.__cause__, ValueError):
            return seen.__cause__
        seen = seen.__cause__
    return None


@hydra.main(config_path=str(CONFIG_DIR), config_name="train", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> float | None:
    try:
        return train(cfg)
    except Exception as err:
        found = user_error(err)
        if found is None or _debug(cfg):
            raise
        message = " ".join(str(found).split())  # one line
        print(f"salseg-train: error: {message}", file=sys.stderr)
        sys.exit(2)


def main() -> None:
    _hydra_main()


__all__ = ["main"]
