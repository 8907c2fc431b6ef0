"""Base class of the per-image-then-aggregate metrics: a torchmetrics ``Metric`` whose states are
sums (scalars or per-threshold curves, float64) plus an image count, so that DDP reduction is a
plain sum and the dataset value is independent of how images are split over processes.

Subclasses declare their summed states in ``SUM_STATES`` (name -> shape, ``()`` for scalars) and
implement :meth:`score_pair`, which returns the contribution of one image to each state and the
image's scalar values (for per-image reports), and :meth:`compute`.
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
from torchmetrics import Metric

from salseg.metrics.protocol import MapPair, iter_pairs


class PairScore:
    """What one image contributes: ``sums`` (state name -> tensor) and ``row`` (name -> float)."""

    __slots__ = ("sums", "row")

    def __init__(self, sums: dict[str, Any], row: dict[str, float]) -> None:
        self.sums = sums
        self.row = row


class SumMetric(Metric):
    """A metric accumulated as sums over images. Inputs of ``update``: predictions (B,1,H,W),
    (B,H,W) or (H,W), float in [0, 1] or uint8 0..255, and GT of the same size (bool, uint8 0..255
    or float in [0, 1])."""

    SUM_STATES: ClassVar[dict[str, tuple[int, ...]]] = {}
    full_state_update = False
    is_differentiable = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for name, shape in self.SUM_STATES.items():
            self.add_state(name, default=torch.zeros(shape, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("n_images", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def score_pair(self, pair: MapPair) -> PairScore:  # pragma: no cover - abstract
        raise NotImplementedError

    def accumulate(self, score: PairScore) -> None:
        """Add one image's contribution to the states (what ``update`` does per image; callable
        directly, e.g. with a score computed in a worker process)."""
        self._computed = None  # torchmetrics' cached compute() result is stale now
        self._update_count += 1
        for name, value in score.sums.items():
            state = getattr(self, name)
            if not isinstance(value, (float, int)):
                value = torch.as_tensor(value, dtype=torch.float64, device=state.device)
            state += value  # in place: states are this metric's own tensors (reset() copies)
        self.n_images += 1

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        for pair in iter_pairs(preds, target):
            self.accumulate(self.score_pair(pair))

    def _mean(self, name: str) -> torch.Tensor:
        """Mean over images of a summed state; 0 when no image was seen (never NaN)."""
        n = self.n_images
        return getattr(self, name) / torch.clamp(n, min=1)
