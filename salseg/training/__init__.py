"""The training room: everything ``salseg-train`` runs around the task and the data.

* :mod:`~salseg.training.pipeline`: ``train(cfg)``, the run record and ``train_summary.json``.
* :mod:`~salseg.training.phases`: phases before the main fit (IS-Net phase 1, the GT encoder).
* :mod:`~salseg.training.trainer`: the Lightning ``Trainer`` built from the config.
* :mod:`~salseg.training.checks`: config and run-directory checks (``ConfigError``).
* :mod:`~salseg.training.checkpoint_io`: atomic checkpoint files, checkpoint integrity.
* :mod:`~salseg.training.loggers`: loggers that keep a run's history across resumes.
* :mod:`~salseg.training.callbacks`: salseg's Lightning callbacks.
"""
from salseg.training.checks import ConfigError
from salseg.training.pipeline import task_config, train

__all__ = ["ConfigError", "task_config", "train"]
