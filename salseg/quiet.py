"""Third-party messages that tell a salseg user nothing, silenced where a Trainer is built.

* Lightning's "Tip: ... try installing litlogger" line on every fit, and its note that salseg's
  own model summary (salseg.training.callbacks.model_summary) replaces the default one;
* torch's ``LeafSpec is deprecated`` FutureWarning, raised inside Lightning's own pytree helper;
* Lightning's "The number of training batches (N) is smaller than the logging interval
  Trainer(log_every_n_steps=...)" warning: short epochs (the synthetic set, fine-tuning on a few
  images) log at the global step interval across epochs, which is what the configs intend.

Everything else (a real deprecation in salseg's own code, a DataLoader problem) still shows.
"""
from __future__ import annotations

import logging
import warnings

_DROPPED_LOG_TEXT = ("litlogger", "Skipping setting a default `ModelSummary`")
_installed = False


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not any(t in text for t in _DROPPED_LOG_TEXT)


def silence_known_noise() -> None:
    """Install the filters once per process (idempotent)."""
    global _installed
    if _installed:
        return
    _installed = True
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(_DropTips())
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated", category=FutureWarning)
    warnings.filterwarnings("ignore", message=r"The number of training batches .* is smaller than "
                            r"the logging interval")


__all__ = ["silence_known_noise"]
