"""Prediction and background removal: the ``Predictor`` API, official pre/post-processing,
mask clean-up, cut-outs/composites and the batch loop of ``salseg-predict``."""
from salseg.predict.postprocess import RefineOptions
from salseg.predict.predictor import Predictor

__all__ = ["Predictor", "RefineOptions"]
