"""Hooks for the outside parity check (``python ../shared/reference/check_parity.py --project``).

``build(name)`` returns a fresh model for a fixture name (``u2net``, ``u2netp``, ``isnetdis``,
``isnet_gt_encoder``: a card's ``official_manifest`` or one of its names) and ``outputs(name,
raw)`` turns its forward output into the flat official structure (7 probability maps, or 6 side
probabilities followed by 6 features).  ``logits(name, raw)`` is the card's prediction, the
logit map BiRefNet's checker compares (``python ../shared/reference/birefnet/check_birefnet.py
salseg.models.parity:build --outputs salseg.models.parity:logits --loss
salseg.losses.parity:birefnet_loss``).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from salseg.models.card import ModelCard, cards, get_card


def card_for_manifest(name: str) -> ModelCard:
    """The card whose official parity fixture is ``name`` (else the card named ``name``)."""
    for card in cards():
        if card.official_manifest == name:
            return card
    return get_card(name)


def build(name: str) -> nn.Module:
    return card_for_manifest(name).build()


def outputs(name: str, raw: Any) -> Sequence[torch.Tensor]:
    return card_for_manifest(name).official_flat(raw)


def logits(name: str, raw: Any) -> torch.Tensor:
    return card_for_manifest(name).outputs(raw).prediction
