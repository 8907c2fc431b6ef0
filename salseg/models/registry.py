"""Model registry: build a model by name and convert its outputs to the official structure.

Names: ``u2net``, ``u2netp``, ``isnet`` (the segmentation network, official ``ISNetDIS``) and
``isnet_gt_encoder``.  ``isnetdis`` is accepted as an alias of ``isnet``.

Output structures (all maps at the input size):

* ``u2net`` / ``u2netp``: ``[fused, side1, ..., side6]`` logits;
* ``isnet`` / ``isnet_gt_encoder``: ``(sides, features)`` with 6 side logits and 6 features.

``to_official`` applies the sigmoid and returns what the official ``forward`` returns:
7 probability maps (fused first) for U2-Net, ``([6 probabilities], [6 features])`` for IS-Net.
``official_flat`` returns the flat sequence used by the parity fixtures (7, or 6 + 6 tensors).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from salseg.models.isnet import ISNet, ISNetGTEncoder
from salseg.models.u2net import U2Net, U2NetP

MODELS: dict[str, Callable[..., nn.Module]] = {
    "u2net": U2Net,
    "u2netp": U2NetP,
    "isnet": ISNet,
    "isnet_gt_encoder": ISNetGTEncoder,
}
ALIASES = {"isnetdis": "isnet", "isnet_dis": "isnet", "isnet-general-use": "isnet",
           "u2net_lite": "u2netp", "gt_encoder": "isnet_gt_encoder"}


def canonical_name(name: str) -> str:
    """Return the registry name for ``name`` (aliases resolved), or raise a clear error."""
    key = ALIASES.get(name.lower(), name.lower())
    if key not in MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {sorted(MODELS)}")
    return key


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a fresh model by name (``in_ch``/``out_ch`` may be passed as keyword arguments)."""
    return MODELS[canonical_name(name)](**kwargs)


def is_u2net(name: str) -> bool:
    return canonical_name(name) in ("u2net", "u2netp")


def side_logits(name: str, outputs: Any) -> list[torch.Tensor]:
    """All supervised logit maps: ``[fused, side1..6]`` for U2-Net, ``[side1..6]`` for IS-Net."""
    if is_u2net(name):
        return list(outputs)
    return list(outputs[0])


def features(name: str, outputs: Any) -> list[torch.Tensor]:
    """The 6 feature maps of IS-Net / the GT encoder (empty for U2-Net)."""
    return [] if is_u2net(name) else list(outputs[1])


def prediction_logits(name: str, outputs: Any) -> torch.Tensor:
    """The logit map that is the model's prediction: fused for U2-Net, side 1 for IS-Net."""
    return side_logits(name, outputs)[0]


def to_official(name: str, outputs: Any) -> Any:
    """Convert a forward's output to the official structure (probabilities)."""
    if is_u2net(name):
        return [torch.sigmoid(t) for t in outputs]
    sides, feats = outputs
    return [torch.sigmoid(t) for t in sides], list(feats)


def official_flat(name: str, outputs: Any) -> Sequence[torch.Tensor]:
    """The official outputs as one flat list: 7 maps (U2-Net) or 6 sides + 6 features (IS-Net)."""
    official = to_official(name, outputs)
    if is_u2net(name):
        return official
    return [*official[0], *official[1]]
