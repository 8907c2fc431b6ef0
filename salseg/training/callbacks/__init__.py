"""Lightning callbacks specific to salseg."""
from salseg.training.callbacks.starting_point import StartingPoint
from salseg.training.callbacks.threshold_stopping import ThresholdStopping

__all__ = ["StartingPoint", "ThresholdStopping"]
