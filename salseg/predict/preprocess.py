"""Model input preparation for prediction, following the official inference scripts.

* **U2-Net / U2-NetP** (``u2net_test.py``, OFFICIAL_NOTES §2.2-2.3): ``skimage.transform.resize``
  to 320x320 (aspect ratio not kept, bilinear, ``mode='constant'``) of the uint8 image, which
  yields floats in [0, 1]; then division by the image's own maximum and ImageNet mean/std.
  scikit-image 0.14 (pinned by the official repo) did **not** anti-alias, current versions do
  by default, so ``anti_aliasing=False`` is passed explicitly: ``resize="official"`` is the
  pretrained models' preprocessing, computed in float64 like the original.
* **IS-Net** (``Inference.py``, OFFICIAL_NOTES §3.6): float CHW image, ``F.interpolate`` to
  1024x1024 (bilinear, ``align_corners=False``, no anti-aliasing), **truncated to uint8**,
  ``/255``, mean 0.5, std 1.0.

``resize="antialias"`` is a named deviation: torch bilinear resizing with anti-aliasing and no
uint8 truncation (smoother inputs for very large images), for every model.
The normalisation itself always comes from :func:`salseg.models.spec.get_spec`.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from salseg.models.registry import canonical_name
from salseg.models.spec import ModelSpec, get_spec

RESIZE_MODES = ("official", "antialias")


def as_size(size: int | Sequence[int] | None, spec: ModelSpec) -> tuple[int, int]:
    """``(height, width)`` of the model input: ``size`` if given (an int means square)."""
    if size is None:
        return tuple(spec.input_size)  # type: ignore[return-value]
    if isinstance(size, int):
        return (size, size)
    h, w = (int(s) for s in size)
    return (h, w)


class Preprocessor:
    """Turn a uint8 RGB image ``(H, W, 3)`` into the normalised model input ``(3, h, w)``."""

    def __init__(self, model: str, input_size: int | Sequence[int] | None = None,
                 resize: str = "official", overrides: dict | None = None) -> None:
        if resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")
        self.model = canonical_name(model)
        if self.model == "isnet_gt_encoder":
            raise ValueError("isnet_gt_encoder takes masks, not images: it cannot predict")
        self.spec = get_spec(self.model)
        self.official_scale = self.spec.scale  # the architecture's resize family (not overridden)
        if overrides:  # a checkpoint's own preprocessing (model-zoo entries), e.g. isnet-anime
            unknown = set(overrides) - {"input_size", "mean", "std", "scale"}
            if unknown:
                raise ValueError(f"unknown preprocessing override(s) {sorted(unknown)}")
            self.spec = dataclasses.replace(self.spec, **{
                k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in overrides.items()})
        self.size = as_size(input_size, self.spec)
        if min(self.size) < 1:
            raise ValueError(f"input size must be positive, got {self.size}")
        self.resize = resize

    def resized(self, image: np.ndarray) -> torch.Tensor:
        """The resized image as float ``(1, 3, h, w)`` in the 0..255 range (before normalising)."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected a uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
        h, w = self.size
        if self.resize == "antialias":
            x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
            if x.shape[-2:] != (h, w):
                x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False,
                                  antialias=True)
            return x.clamp_(0, 255)
        if self.official_scale == "max":  # U2-Net: scikit-image bilinear, float64 in [0, 1]
            from skimage.transform import resize as sk_resize

            out = sk_resize(image, (h, w), order=1, mode="constant", anti_aliasing=False)
            return torch.from_numpy(out * 255.0).permute(2, 0, 1)[None]
        # IS-Net: torch bilinear on float, then uint8 truncation
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
        return x.to(torch.uint8).float()

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        """Normalised float32 model input ``(3, h, w)`` for one image."""
        x = self.resized(image)
        if self.spec.scale == "max" and x.dtype == torch.float64:
            # keep the official float64 arithmetic up to the final cast
            peak = x.amax()
            x = x / peak if peak > 0 else x
            mean = torch.tensor(self.spec.mean, dtype=x.dtype).view(1, -1, 1, 1)
            std = torch.tensor(self.spec.std, dtype=x.dtype).view(1, -1, 1, 1)
            return ((x - mean) / std)[0].float()
        return self.spec.normalize(x)[0]
