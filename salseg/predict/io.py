"""Atomic output writing for prediction: PNG files appear complete or not at all.

Every output is first written to a hidden temporary file in the destination folder and then
moved into place in one step.  Without ``overwrite`` the move is a hard link, which fails if the
destination appeared in the meantime, so an existing result is never replaced (on file systems
without hard links an existence check followed by ``os.replace`` is used instead).
"""
from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image


class OutputExistsError(FileExistsError):
    """The destination exists and overwriting was not requested."""


def write_bytes_atomic(data: bytes, path: str | Path, overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically; raise :class:`OutputExistsError` if it exists."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not overwrite and path.exists():
        raise OutputExistsError(f"{path}: exists (use --overwrite to replace it)")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise OutputExistsError(f"{path}: exists (use --overwrite to replace it)") from None
            except OSError:  # no hard links here (some network / FAT file systems)
                if path.exists():
                    raise OutputExistsError(f"{path}: exists (use --overwrite)") from None
                os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


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
