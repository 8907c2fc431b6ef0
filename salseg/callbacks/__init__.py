"""Lightning callbacks specific to salseg."""
from salseg.callbacks.threshold_stopping import ThresholdStopping

__all__ = ["ThresholdStopping"]
