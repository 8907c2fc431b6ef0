"""LightningModules that wire models, losses and metrics (no model or metric logic here)."""
from salseg.tasks.base import SegmentationTask
from salseg.tasks.isnet import GTEncoderTask, ISNetTask
from salseg.tasks.u2net import U2NetTask

__all__ = ["SegmentationTask", "U2NetTask", "GTEncoderTask", "ISNetTask"]
