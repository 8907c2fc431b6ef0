"""The error raised when weights cannot be read or do not fit a model (its own module, so that
the weight readers, :mod:`salseg.models.weights` and :mod:`salseg.models.onnx_import`, share it
without importing each other)."""
from __future__ import annotations


class WeightsError(RuntimeError):
    """A checkpoint could not be read or does not fit the model."""
