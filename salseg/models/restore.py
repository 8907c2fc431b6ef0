"""From the model's probability map to the alpha mask at the original image size, as the card's
:class:`~salseg.models.card.Preprocessing` says (the inverse of :mod:`salseg.models.preprocess`).

Restoring the original size follows the official inference scripts, chosen by the
preprocessing's ``restore`` field (:class:`salseg.models.card.Preprocessing`):

* ``"pil_uint8"``, **U2-Net** (``u2net_test.py``, OFFICIAL_NOTES §2.3): min-max normalisation of the fused map at
  the model resolution, ``*255`` truncated to 8 bits, then ``PIL`` bilinear resize to the
  original size.
* ``"float"``, **IS-Net** (``Inference.py``, OFFICIAL_NOTES §3.6): side 1 resized to the original size with
  ``F.interpolate`` (bilinear, ``align_corners=False``), then min-max normalisation.

* ``"float_align_corners"``, **BiRefNet** (``inference.py``): the sigmoid map resized with
  ``F.interpolate`` (bilinear, ``align_corners=True``), no min-max (``normalization="sigmoid"``).
* ``"pil_bicubic"``, the BiRefNet model-card snippet: ``*255`` truncated to 8 bits at model
  resolution, then ``PIL`` bicubic resize.

``normalization="sigmoid"`` skips the min-max step and keeps the raw probabilities (a constant
map under min-max, where the official code divides by zero, becomes all zeros).
The alpha is a float32 array in [0, 1]; :func:`to_uint8` truncates ``alpha*255`` as both
official scripts do.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from salseg.models.card import NORMALIZATIONS, RESTORES, Preprocessing, get_card


def minmax(x: torch.Tensor) -> torch.Tensor:
    """``(x - min) / (max - min)`` over the whole map; a constant map gives zeros."""
    lo, hi = x.min(), x.max()
    span = hi - lo
    if not torch.isfinite(span) or span <= 0:
        return torch.zeros_like(x)
    return (x - lo) / span


def restore_mode(how: str | Preprocessing) -> str:
    """The restore mode of a :class:`Preprocessing`, a restore mode name or a model name."""
    if isinstance(how, Preprocessing):
        return how.restore
    if how in RESTORES:
        return how
    return get_card(how).preprocessing.restore


DEFAULT_NORMALIZATION = "minmax"  # the Predictor's default normalisation of the prediction


def restore_alpha(prob: torch.Tensor, original_size: tuple[int, int],
                  model: str | Preprocessing, normalization: str = "minmax") -> np.ndarray:
    """Probability ``(h, w)`` at model resolution -> float32 alpha ``(H, W)`` at ``original_size``.

    ``model``: a :class:`Preprocessing`, its ``restore`` mode, or a model name (its card's).
    Runs on ``prob``'s device; the result is a NumPy array on the CPU.
    """
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    prob = prob.float().reshape(prob.shape[-2:])
    height, width = original_size
    mode = restore_mode(model)
    if mode in ("pil_uint8", "pil_bicubic"):
        if normalization == "minmax":
            prob = minmax(prob)
        q = torch.floor(prob.clamp(0, 1) * 255).to(torch.uint8).cpu().numpy()
        if q.shape != (height, width):
            resample = Image.BILINEAR if mode == "pil_uint8" else Image.BICUBIC
            q = np.asarray(Image.fromarray(q).resize((width, height), resample))
        return q.astype(np.float32) / np.float32(255)
    if prob.shape != (height, width):
        prob = F.interpolate(prob[None, None], size=(height, width), mode="bilinear",
                             align_corners=mode == "float_align_corners")[0, 0]
    if normalization == "minmax":
        prob = minmax(prob)
    return prob.clamp(0, 1).cpu().numpy().astype(np.float32, copy=False)


def to_uint8(alpha: np.ndarray) -> np.ndarray:
    """Alpha in [0, 1] -> uint8 by truncation of ``alpha * 255`` (official behaviour)."""
    return np.floor(np.clip(alpha, 0.0, 1.0) * np.float32(255)).astype(np.uint8)
