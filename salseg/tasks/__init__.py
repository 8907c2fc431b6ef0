"""LightningModules that wire models, losses and metrics (no model or metric logic here).

``TrainingTask`` is the one training task; ``U2NetTask``, ``GTEncoderTask`` and ``ISNetTask``
are the names of older configs and checkpoints (they map old keywords onto loss terms)."""
from salseg.tasks.base import SegmentationTask
from salseg.tasks.generic import TrainingTask
from salseg.tasks.isnet import GTEncoderTask, ISNetTask
from salseg.tasks.u2net import U2NetTask

__all__ = ["SegmentationTask", "TrainingTask", "U2NetTask", "GTEncoderTask", "ISNetTask"]
