"""Lightning callbacks specific to salseg."""
from salseg.callbacks.starting_point import StartingPoint
from salseg.callbacks.threshold_stopping import ThresholdStopping

__all__ = ["StartingPoint", "ThresholdStopping"]
