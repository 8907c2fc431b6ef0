"""Relaxed boundary F-measure, relaxFb (BASNet, CVPR 2019, sec. 4.2; U2-Net, PR 2020, sec. 4.2).

No official code exists; this is the ``primary`` definition of docs/metrics.md, every detail named:

* prediction binarised at 0.5 (``p / 255 > 0.5``, i.e. ``p8 >= 128``), GT ``g > 128``;
* boundary = ``mask XOR erode(mask)`` with a 3 x 3 square; outside the image counts as foreground
  (OpenCV's default erosion border), so the image edge is not a boundary;
* a boundary pixel is matched when a boundary pixel of the other map lies within Euclidean
  distance ``rho = 3`` (dilation with the disk ``dx^2 + dy^2 <= rho^2``);
* relaxed precision = matched predicted boundary / predicted boundary (0 if empty), relaxed recall
  = matched GT boundary / GT boundary (0 if empty), F with beta^2 = 0.3, 0 if P + R = 0 (so an
  empty-vs-empty pair scores 0); dataset = mean of per-image F.

Runs in torch (CPU or CUDA).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from salseg.metrics.base import PairScore, SumMetric
from salseg.metrics.protocol import MapPair


def boundary(mask: torch.Tensor) -> torch.Tensor:
    """``mask XOR erode3x3(mask)``, outside of the image treated as foreground."""
    m = mask.to(torch.float32)[None, None]
    eroded = -F.max_pool2d(-m, kernel_size=3, stride=1, padding=1)  # padding is ignored (-inf)
    return mask ^ (eroded[0, 0] > 0.5)


def disk_kernel(rho: int) -> torch.Tensor:
    ax = torch.arange(-rho, rho + 1, dtype=torch.float32)
    return ((ax[:, None] ** 2 + ax[None, :] ** 2) <= rho * rho).to(torch.float32)


def within(b: torch.Tensor, rho: int) -> torch.Tensor:
    """Pixels whose Euclidean distance to a pixel of ``b`` is at most ``rho``."""
    k = disk_kernel(rho).to(b.device)
    hits = F.conv2d(b.to(torch.float32)[None, None], k[None, None], padding=rho)[0, 0]
    return hits > 0.5


def relax_boundary_f(pred_bin: torch.Tensor, gt: torch.Tensor, rho: int = 3, beta2: float = 0.3) -> dict[
    str, float
]:
    """Relaxed boundary precision, recall and F of two binary masks."""
    bp, bg = boundary(pred_bin), boundary(gt)
    n_p, n_g = int(bp.sum()), int(bg.sum())
    precision = float((bp & within(bg, rho)).sum()) / n_p if n_p > 0 else 0.0
    recall = float((bg & within(bp, rho)).sum()) / n_g if n_g > 0 else 0.0
    if precision + recall > 0:
        f = (1 + beta2) * precision * recall / (beta2 * precision + recall)
    else:
        f = 0.0
    return {"precision": precision, "recall": recall, "f": f, "n_pred_boundary": n_p,
            "n_gt_boundary": n_g}


class RelaxedBoundaryFMeasure(SumMetric):
    """relaxFb (``primary`` definition, rho = 3, beta^2 = 0.3). ``compute()`` keys: ``relax_fb``,
    ``relax_precision``, ``relax_recall`` (means over images)."""

    SUM_STATES = {"sum_f": (), "sum_precision": (), "sum_recall": ()}
    higher_is_better = True

    def __init__(self, rho: int = 3, beta2: float = 0.3, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rho = rho
        self.beta2 = beta2

    def score_pair(self, pair: MapPair) -> PairScore:
        r = relax_boundary_f(pair.p > 0.5, pair.gt, self.rho, self.beta2)
        return PairScore(
            {"sum_f": r["f"], "sum_precision": r["precision"], "sum_recall": r["recall"]},
            {"relax_fb": r["f"]},
        )

    def compute(self) -> dict[str, torch.Tensor]:
        return {
            "relax_fb": self._mean("sum_f"),
            "relax_precision": self._mean("sum_precision"),
            "relax_recall": self._mean("sum_recall"),
        }
