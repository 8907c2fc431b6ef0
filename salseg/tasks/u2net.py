"""``U2NetTask``: the name older configs and checkpoints use for U2-Net / U2-NetP training.

U2-Net's loss (paper §3.3, official ``u2net_train.py``: BCE of the fused map plus BCE of each
of the six side maps, weights 1) is the card's default loss of the one training task,
:class:`salseg.tasks.TrainingTask`.  This subclass only maps the old keyword ``loss_weights``
(7 values, fused first) onto the ``bce`` term.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from salseg.models.card import get_card
from salseg.tasks.generic import TrainingTask


def with_weights(loss: Any, name: str, term: str, **values: Any) -> Any:
    """``loss`` (default: the card's) with the non-``None`` ``values`` set on ``term``."""
    values = {k: (list(v) if isinstance(v, Sequence) and not isinstance(v, str) else v)
              for k, v in values.items() if v is not None}
    if not values:
        return loss
    loss = {k: dict(v) for k, v in (get_card(name).loss if loss is None else loss).items()}
    if term in loss:
        loss[term].update(values)
    return loss


class U2NetTask(TrainingTask):
    def __init__(self, name: str = "u2net", loss_weights: Sequence[float] | None = None,
                 **kwargs: Any) -> None:
        kwargs["loss"] = with_weights(kwargs.get("loss"), name, "bce", weight=loss_weights)
        super().__init__(name=name, **kwargs)
