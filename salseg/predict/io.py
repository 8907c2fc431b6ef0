"""Atomic output writing for prediction: PNG files appear complete or not at all.

Every output is first written to a hidden temporary file in the destination folder and then
moved into place in one step.  Without ``overwrite`` the move is a hard link, which fails if the
destination appeared in the meantime, so an existing result is never replaced (on file systems
without hard links an existence check followed by ``os.replace`` is used instead).
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from salseg.atomic import OutputExistsError, write_bytes_atomic

__all__ = ["OutputExistsError", "encode_png", "write_bytes_atomic", "write_png"]


def encode_png(array: np.ndarray) -> bytes:
    """Encode a uint8 array ``(H, W)`` (L), ``(H, W, 3)`` (RGB) or ``(H, W, 4)`` (RGBA) as PNG."""
    if array.dtype != np.uint8:
        raise TypeError(f"expected a uint8 array, got {array.dtype}")
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def write_png(array: np.ndarray, path: str | Path, overwrite: bool = False) -> Path:
    """Encode ``array`` as PNG and write it atomically to ``path``."""
    return write_bytes_atomic(encode_png(array), path, overwrite=overwrite)
