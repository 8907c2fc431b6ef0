"""Model input preparation for prediction, following the official inference scripts.

What to do comes from a :class:`~salseg.models.card.Preprocessing` (a model card's, possibly
overridden by a checkpoint or an ONNX file's metadata); its ``resize`` field chooses the resize:

* ``"skimage"`` (official U2-Net ``u2net_test.py``, OFFICIAL_NOTES §2.2-2.3):
  ``skimage.transform.resize`` (bilinear, ``mode='constant'``, aspect ratio not kept) of the
  uint8 image, which yields floats in [0, 1]; then division by the image's own maximum and the
  mean/std, all in float64 like the original.  scikit-image 0.14 (pinned by the official repo)
  did **not** anti-alias, current versions do by default, so ``anti_aliasing=False`` is passed.
* ``"torch_trunc"`` (official IS-Net ``Inference.py``, §3.6): float CHW image, ``F.interpolate``
  (bilinear, ``align_corners=False``, no anti-aliasing), **truncated to uint8**, then scaled and
  normalised.
* ``"cv2_linear"`` (official BiRefNet ``inference.py``): ``cv2.resize`` with ``INTER_LINEAR`` of
  the uint8 image (no anti-aliasing, 8-bit result), then ``/255`` and the mean/std.
* ``"pil_bilinear"`` (the BiRefNet model-card snippet): PIL bilinear resize (anti-aliased when
  shrinking) of the uint8 image, then ``/255`` and the mean/std.
* ``"antialias"``: a named deviation, torch bilinear with anti-aliasing and no truncation
  (smoother inputs for very large images); ``Preprocessor(..., resize="antialias")`` selects it
  for any model.

A grayscale image (``gray=True``: decoded from one channel) is normalised by the
preprocessing's ``gray`` rule; the official U2-Net rule uses the R statistics on all channels.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import fields, replace

import numpy as np
import torch
import torch.nn.functional as F

from salseg.models.card import Preprocessing, get_card

RESIZE_MODES = ("official", "antialias")


def as_size(size: int | Sequence[int] | None, spec: Preprocessing) -> tuple[int, int]:
    """``(height, width)`` of the model input: ``size`` if given (an int means square)."""
    if size is None:
        return tuple(spec.input_size)  # type: ignore[return-value]
    if isinstance(size, int):
        return (size, size)
    h, w = (int(s) for s in size)
    return (h, w)


def resolve_preprocessing(model: str | Preprocessing, input_size: int | Sequence[int] | None = None,
                          resize: str = "official", overrides: Mapping | None = None
                          ) -> Preprocessing:
    """A model name's (or a given) preprocessing with the prediction options applied.

    ``overrides`` replaces fields of the record (e.g. a checkpoint's own ``mean``/``std``);
    ``resize="official"`` keeps the preprocessing's own resize, ``"antialias"`` replaces it.
    Refuses models that take masks instead of images (the IS-Net GT encoder).
    """
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")
    if isinstance(model, Preprocessing):
        pre = model
    else:
        card = get_card(model)
        if not card.can_predict:
            raise ValueError(f"{card.name} takes masks, not images: it cannot predict")
        pre = card.preprocessing
    if overrides:
        known = {f.name for f in fields(Preprocessing)}
        unknown = set(overrides) - known
        if unknown:
            raise ValueError(f"unknown preprocessing override(s) {sorted(unknown)}")
        pre = replace(pre, **{k: tuple(v) if isinstance(v, list) else v
                              for k, v in overrides.items()})
    if pre.in_channels != 3:
        raise ValueError(f"prediction needs a 3-channel model input, this one takes "
                         f"{pre.in_channels}")
    size = as_size(input_size, pre)
    if min(size) < 1:
        raise ValueError(f"input size must be positive, got {size}")
    changes: dict = {"input_size": size}
    if resize == "antialias":
        changes["resize"] = "antialias"
    return replace(pre, **changes)


class Preprocessor:
    """Turn a uint8 RGB image ``(H, W, 3)`` into the normalised model input ``(3, h, w)``."""

    def __init__(self, model: str | Preprocessing, input_size: int | Sequence[int] | None = None,
                 resize: str = "official", overrides: Mapping | None = None) -> None:
        self.preprocessing = resolve_preprocessing(model, input_size, resize, overrides)
        self.size = self.preprocessing.input_size

    @property
    def spec(self) -> Preprocessing:
        return self.preprocessing

    def resized(self, image: np.ndarray) -> torch.Tensor:
        """The resized image as float ``(1, 3, h, w)`` in the 0..255 range (before normalising)."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected a uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
        h, w = self.size
        mode = self.preprocessing.resize
        if mode == "skimage":  # scikit-image bilinear, float64 in [0, 1]
            from skimage.transform import resize as sk_resize

            out = sk_resize(image, (h, w), order=1, mode="constant", anti_aliasing=False)
            return torch.from_numpy(out * 255.0).permute(2, 0, 1)[None]
        if mode in ("cv2_linear", "pil_bilinear"):
            if image.shape[:2] == (h, w):
                out = image
            elif mode == "cv2_linear":
                import cv2

                out = cv2.resize(np.ascontiguousarray(image), (w, h),
                                 interpolation=cv2.INTER_LINEAR)
            else:
                from PIL import Image

                out = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
            return torch.from_numpy(np.array(out)).permute(2, 0, 1)[None].float()
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
        if mode == "antialias":
            if x.shape[-2:] != (h, w):
                x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False,
                                  antialias=True)
            return x.clamp_(0, 255)
        # torch_trunc: torch bilinear on float, then uint8 truncation
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
        return x.to(torch.uint8).float()

    def __call__(self, image: np.ndarray, gray: bool = False) -> torch.Tensor:
        """Normalised float32 model input ``(3, h, w)`` for one image.

        ``gray``: the image was decoded from a single channel (see the module docstring).
        """
        # float64 (skimage) inputs keep the official float64 arithmetic up to the final cast
        return self.preprocessing.normalize(self.resized(image), gray)[0].float()
