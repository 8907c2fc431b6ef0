"""Build a model by name and read its outputs: thin helpers over the model cards.

Every function here looks the architecture up with :func:`salseg.models.card.get_card` (names
and aliases come from the cards, e.g. ``isnetdis`` for ``isnet``) and delegates to it, so adding
an architecture never touches this module.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from salseg.models.card import cards, get_card


def model_names() -> list[str]:
    """The registered architecture names (aliases excluded)."""
    return [c.name for c in cards()]


def canonical_name(name: str) -> str:
    """Return the registry name for ``name`` (aliases resolved), or raise a clear error."""
    return get_card(name).name


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a fresh model by name (``in_ch``/``out_ch`` may be passed as keyword arguments)."""
    return get_card(name).build(**kwargs)


def side_logits(name: str, outputs: Any) -> list[torch.Tensor]:
    """All supervised logit maps: ``[fused, side1..6]`` for U2-Net, ``[side1..6]`` for IS-Net."""
    return get_card(name).outputs(outputs).sides


def features(name: str, outputs: Any) -> list[torch.Tensor]:
    """The feature maps for feature synchronisation (empty when the model has none)."""
    return get_card(name).outputs(outputs).features


def prediction_logits(name: str, outputs: Any) -> torch.Tensor:
    """The logit map that is the model's prediction: fused for U2-Net, side 1 for IS-Net."""
    return get_card(name).outputs(outputs).prediction


def to_official(name: str, outputs: Any) -> Any:
    """Convert a forward's output to the official structure (probabilities)."""
    return get_card(name).to_official(outputs)


def official_flat(name: str, outputs: Any) -> Sequence[torch.Tensor]:
    """The official outputs as one flat list: 7 maps (U2-Net) or 6 sides + 6 features (IS-Net)."""
    return get_card(name).official_flat(outputs)


class _Constructors(Mapping):
    """``MODELS``: a live read-only view ``name -> constructor`` over the registered cards."""

    def __getitem__(self, name: str) -> Callable[..., nn.Module]:
        for card in cards():
            if card.name == name:
                return card.build
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return iter(model_names())

    def __len__(self) -> int:
        return len(cards())


MODELS: Mapping[str, Callable[..., nn.Module]] = _Constructors()
