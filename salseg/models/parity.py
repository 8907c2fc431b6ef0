"""Hooks for the outside parity check (``python ../shared/reference/check_parity.py --project``).

``build(name)`` returns a fresh model for a fixture name (``u2net``, ``u2netp``, ``isnetdis``,
``isnet_gt_encoder``) and ``outputs(name, raw)`` turns its forward output into the flat official
structure (7 probability maps, or 6 side probabilities followed by 6 features).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from salseg.models.registry import create_model, official_flat


def build(name: str) -> nn.Module:
    return create_model(name)


def outputs(name: str, raw: Any) -> Sequence[torch.Tensor]:
    return official_flat(name, raw)
