"""Turn the image types accepted by the Python API into uint8 RGB ``(H, W, 3)`` arrays.

Files are decoded by :func:`salseg.data.io.read_image` (EXIF orientation, every mode, clear
errors); PIL images go through the same conversion (:func:`salseg.data.io.pil_to_rgb`).
In-memory inputs follow the same rules:

* ``PIL.Image``: EXIF orientation applied, alpha dropped, grayscale replicated, 16-bit
  single-channel scaled with ``round(v / 257)``, other modes converted by Pillow;
* ``numpy``: ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)`` (alpha dropped); uint8 as is,
  uint16 scaled by 1/257, floats taken as [0, 1] when their maximum is <= 1, else as 0..255;
* ``torch.Tensor``: ``(3, H, W)`` / ``(1, H, W)`` / ``(H, W)`` (channels first, torchvision style);
  uint8 as is, floats taken as [0, 1] (clipped).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

ImageInput = Any  # str | Path | PIL.Image.Image | np.ndarray | torch.Tensor


def _from_pil(img: Image.Image) -> np.ndarray:
    """EXIF orientation, then the same conversion as files (:func:`salseg.data.io.pil_to_rgb`)."""
    from salseg.data.io import pil_to_rgb

    img = ImageOps.exif_transpose(img) or img
    return pil_to_rgb(img)[0]


def _from_array(arr: np.ndarray) -> np.ndarray:
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) array, "
                         f"got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"empty image of shape {arr.shape}")
    arr = arr[..., :3]
    if arr.dtype == np.uint8:
        out = arr
    elif arr.dtype == np.uint16:
        out = np.clip(np.rint(arr / 257.0), 0, 255).astype(np.uint8)
    elif arr.dtype == np.bool_:
        out = arr.astype(np.uint8) * 255
    elif np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer):
        f = np.nan_to_num(arr.astype(np.float64))
        if np.issubdtype(arr.dtype, np.floating) and f.max(initial=0) <= 1.0:
            f = f * 255.0
        out = np.clip(np.rint(f), 0, 255).astype(np.uint8)
    else:
        raise ValueError(f"unsupported image dtype {arr.dtype}")
    if out.shape[2] == 1:
        out = np.repeat(out, 3, axis=2)
    return np.ascontiguousarray(out)


def is_gray(image: ImageInput) -> bool:
    """Whether an in-memory image holds one colour channel (PIL gray modes, ``(H, W)`` /
    ``(H, W, 1)`` arrays, ``(1, H, W)`` / ``(H, W)`` tensors)."""
    from salseg.data.io import is_gray_mode

    if isinstance(image, Image.Image):
        return is_gray_mode(image.mode)
    if isinstance(image, np.ndarray):
        return image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1)
    if isinstance(image, torch.Tensor):
        t = image[0] if image.ndim == 4 and image.shape[0] == 1 else image
        return t.ndim == 2 or (t.ndim == 3 and t.shape[0] == 1)
    return False


def decode_image(image: ImageInput) -> tuple[np.ndarray, bool]:
    """``(uint8 RGB (H, W, 3), gray)``: the image and whether it was decoded from one channel
    (its normalisation follows the model's grayscale rule)."""
    if isinstance(image, (str, Path)):
        from salseg.data.io import load_image

        loaded = load_image(image)
        return loaded.array, loaded.gray
    return to_rgb_uint8(image), is_gray(image)


def to_rgb_uint8(image: ImageInput) -> np.ndarray:
    """Any accepted image (see the module docstring) -> uint8 RGB ``(H, W, 3)``."""
    if isinstance(image, (str, Path)):
        from salseg.data.io import read_image

        return read_image(image)
    if isinstance(image, Image.Image):
        return _from_pil(image)
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        if t.ndim == 4 and t.shape[0] == 1:
            t = t[0]
        if t.ndim == 3:
            if t.shape[0] not in (1, 3, 4):
                raise ValueError(f"expected a channels-first (C, H, W) tensor, got {tuple(t.shape)}")
            t = t.permute(1, 2, 0)
        if t.dtype.is_floating_point:
            t = (t.float().clamp(0, 1) * 255).round().to(torch.uint8)
        return _from_array(t.numpy())
    if isinstance(image, np.ndarray):
        return _from_array(image)
    raise TypeError(f"unsupported image type {type(image).__name__} "
                    "(expected a path, PIL image, numpy array or torch tensor)")
