"""Compatibility names for the preprocessing record, which now lives on the model cards.

``ModelSpec`` is :class:`salseg.models.card.Preprocessing` and ``get_spec(name)`` is
``get_card(name).preprocessing``.
"""
from __future__ import annotations

from salseg.models.card import IMAGENET_MEAN, IMAGENET_STD, Preprocessing, get_card

ModelSpec = Preprocessing


def get_spec(name: str) -> Preprocessing:
    """The default :class:`Preprocessing` of architecture ``name`` (aliases accepted)."""
    return get_card(name).preprocessing


__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "ModelSpec", "get_spec"]
