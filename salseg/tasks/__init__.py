"""LightningModules that wire models, losses and metrics (no model or metric logic here).

``TrainingTask`` is the one training task of every card; its options are the typed records of
:mod:`salseg.tasks.options`, made from the flat ``model.<key>`` config keys."""
from salseg.tasks.base import SegmentationTask
from salseg.tasks.generic import TrainingTask
from salseg.tasks.options import TaskOptions, task_options

__all__ = ["SegmentationTask", "TaskOptions", "TrainingTask", "task_options"]
