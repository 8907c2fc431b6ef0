"""Per-map loss criteria, each ``criterion(pred, target) -> scalar``, by name.

Every criterion that a :class:`~salseg.losses.terms.LossTerm` can name lives here:

* ``bce``: binary cross-entropy; from logits in two forms (:mod:`salseg.losses.bce`:
  ``logits`` = ``binary_cross_entropy_with_logits``, ``official`` = ``nn.BCELoss`` on
  ``sigmoid``, log clamped at -100) or on probabilities;
* ``iou``: BiRefNet's ``IoULoss`` (official ``loss.py``): per sample
  ``1 - sum(p g) / (sum(g) + sum(p) - sum(p g))`` over C, H, W, **summed** over the batch;
* ``ssim``: BiRefNet's ``SSIMLoss``: ``1 - (1 + SSIM) / 2`` where SSIM is the mean of the
  SSIM map of an 11x11 Gaussian window (sigma 1.5, built in float32), zero padding 5, one
  window per channel, ``C1 = 0.01**2``, ``C2 = 0.03**2``;
* ``mae``: ``nn.L1Loss`` (mean);
* ``feature``: the IS-Net feature-synchronisation distance (``MSE`` official, ``KL``,
  ``MAE``, ``SmoothL1``; :mod:`salseg.losses.feature_sync`).

``iou``, ``ssim`` and ``mae`` take probabilities; a term computes ``sigmoid`` of the logits
first.  New criteria register with :func:`register_criterion`.
"""
from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F

from salseg.losses.feature_sync import feature_distance

SSIM_WINDOW, SSIM_SIGMA = 11, 1.5
SSIM_C1, SSIM_C2 = 0.01 ** 2, 0.03 ** 2


def iou_loss(prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BiRefNet's IoU loss: ``1 - soft IoU`` per sample, summed (not averaged) over the batch."""
    dims = tuple(range(1, prob.ndim))
    inter = (prob * target).sum(dim=dims)
    union = target.sum(dim=dims) + prob.sum(dim=dims) - inter
    return (1 - inter / union).sum()


@functools.lru_cache(maxsize=8)
def _gaussian_1d(size: int, sigma: float) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32) - size // 2
    g = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def gaussian_window(channels: int, size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA,
                    dtype: torch.dtype = torch.float32, device: torch.device | None = None
                    ) -> torch.Tensor:
    """The ``(channels, 1, size, size)`` SSIM window: outer product of a normalised 1-D
    Gaussian, built in float32 as the official code, then cast."""
    g = _gaussian_1d(size, sigma)
    w = (g[:, None] @ g[None, :]).expand(channels, 1, size, size).contiguous()
    return w.to(dtype=dtype, device=device)


def ssim(prob: torch.Tensor, target: torch.Tensor, size: int = SSIM_WINDOW,
         sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """Mean SSIM of two ``(B, C, H, W)`` maps (Gaussian window, zero padding ``size // 2``)."""
    c = prob.shape[1]
    w = gaussian_window(c, size, sigma, prob.dtype, prob.device)
    pad = size // 2

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, w, padding=pad, groups=c)

    mu1, mu2 = blur(prob), blur(target)
    mu1_sq, mu2_sq, mu12 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    s1 = blur(prob * prob) - mu1_sq
    s2 = blur(target * target) - mu2_sq
    s12 = blur(prob * target) - mu12
    num = (2 * mu12 + SSIM_C1) * (2 * s12 + SSIM_C2)
    den = (mu1_sq + mu2_sq + SSIM_C1) * (s1 + s2 + SSIM_C2)
    return (num / den).mean()


def ssim_loss(prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BiRefNet's SSIM loss, ``1 - (1 + SSIM) / 2``."""
    return 1 - (1 + ssim(prob, target)) / 2


def mae_loss(prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(prob, target)


# name -> (function, takes probabilities)
_CRITERIA: dict[str, tuple[Callable[..., torch.Tensor], bool]] = {
    "iou": (iou_loss, True),
    "ssim": (ssim_loss, True),
    "mae": (mae_loss, True),
    "feature": (feature_distance, False),
}


def register_criterion(name: str, fn: Callable[..., torch.Tensor], on_probabilities: bool = True
                       ) -> None:
    """Add a criterion ``fn(pred, target) -> scalar`` that terms can name."""
    if name in criterion_names():
        raise ValueError(f"loss criterion {name!r} is already registered")
    _CRITERIA[name] = (fn, on_probabilities)


def criterion_names() -> tuple[str, ...]:
    """Every criterion a term can name (``bce`` is handled by the term: its form decides
    whether it reads logits or probabilities)."""
    return ("bce", *_CRITERIA)


def get_criterion(name: str) -> tuple[Callable[..., torch.Tensor], bool]:
    if name not in _CRITERIA:
        raise ValueError(f"unknown loss criterion {name!r}; expected one of {list(criterion_names())}")
    return _CRITERIA[name]
