"""``resolve(weights, model)`` -> :class:`Weights` (see :mod:`salseg.weights`).

A project ``.ckpt`` is read with ``torch.load`` once: its state dict (under ``model.``) and its
hyper-parameters (architecture name, training input size) come from the same read.  A model-zoo
name is downloaded (or converted) on first use and carries its catalogue metadata.  An ``.onnx``
file from ``salseg-export`` carries its card name and :class:`Preprocessing`.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from salseg.export.onnx import read_metadata
from salseg.models.batchnorm import has_folded_batchnorm
from salseg.models.card import ModelCard, Preprocessing, get_card
from salseg.models.errors import WeightsError
from salseg.models.registry import canonical_name, create_model
from salseg.models.state_dict_io import TASK_PREFIX, strip_prefixes, unwrap_state_dict
from salseg.models.weights import guess_architecture
from salseg.weights.load import (
    load_weights,
    not_a_file_reason,
    read_state_dict,
    resolve_checkpoint,
)
from salseg.zoo.resolve import zoo_entry_for, zoo_meta

TORCH_SUFFIXES = (".safetensors", ".onnx")  # read by read_state_dict; anything else: torch.load


@dataclass(frozen=True)
class Weights:
    """Resolved weights: ``state_dict`` (read once), ``card``, ``preprocessing`` (the card's
    with what the file or catalogue records), ``metadata`` (``name``, ``input_size``, zoo
    fields), ``format`` (file suffix without the dot), ``path`` and ``folded_bn``."""

    source: str
    path: Path
    format: str
    state_dict: OrderedDict[str, torch.Tensor]
    card: ModelCard
    preprocessing: Preprocessing
    metadata: dict = field(default_factory=dict)
    folded_bn: bool = False

    @property
    def name(self) -> str:
        return self.card.name

    def build(self) -> nn.Module:
        """The card's network (with the recorded ``out_ch``) with these weights, strictly."""
        out_ch = int(self.metadata.get("out_ch", 1) or 1)
        net = create_model(self.card.name, **({"out_ch": out_ch} if out_ch != 1 else {}))
        try:
            net.load_state_dict(self.state_dict, strict=True)
        except RuntimeError:
            load_weights(net, self.path, name=self.card.name)  # a readable WeightsError
            raise
        return net


def _read_torch(path: Path, prefix: str | None) -> tuple[OrderedDict[str, torch.Tensor], dict]:
    """One ``torch.load``: the state dict and, for a Lightning checkpoint, its metadata."""
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - re-raised with the file name
        raise WeightsError(f"{path}: cannot be read as a PyTorch checkpoint ({exc})") from exc
    meta: dict[str, Any] = {}
    if isinstance(obj, Mapping) and "state_dict" in obj and "pytorch-lightning_version" in obj:
        want = TASK_PREFIX if prefix is None else prefix
        raw = OrderedDict((k[len(want):], v) for k, v in obj["state_dict"].items()
                          if k.startswith(want))
        if not raw:
            raise WeightsError(f"{path}: Lightning checkpoint has no weights under {want!r}")
        hp = obj.get("hyper_parameters", {}) or {}
        if hp.get("name"):
            meta["name"] = canonical_name(str(hp["name"]))
        if hp.get("input_size"):
            meta["input_size"] = [int(s) for s in hp["input_size"]]
    else:
        raw = unwrap_state_dict(obj, path)
    return OrderedDict((strip_prefixes(k), v) for k, v in raw.items()), meta


def resolve(weights: str | Path, model: str | None = None, prefix: str | None = None
            ) -> Weights:
    """Resolve ``weights`` (a path or a model-zoo name) for the architecture ``model`` (default:
    what the file or catalogue records, else a guess from the keys)."""
    entry = zoo_entry_for(weights)
    meta: dict[str, Any] = zoo_meta(entry) if entry is not None else {}
    path = resolve_checkpoint(weights)
    if not path.is_file():
        raise WeightsError(not_a_file_reason(path))
    if path.stat().st_size == 0:
        raise WeightsError(f"{path}: checkpoint file is empty (0 bytes)")
    suffix = path.suffix.lower()
    recorded = None
    if suffix in TORCH_SUFFIXES:
        state_dict = read_state_dict(path, prefix=prefix)
        if suffix == ".onnx":
            recorded_name, recorded = read_metadata(path)
            if recorded_name:
                meta.setdefault("name", canonical_name(recorded_name))
    else:
        state_dict, file_meta = _read_torch(path, prefix)
        meta = {**file_meta, **meta}
    name = canonical_name(model) if model else meta.get("name") or guess_architecture(state_dict)
    if name is None:
        raise WeightsError(f"{weights}: cannot tell the architecture from the weights; "
                           "pass model=<name>")
    card = get_card(name)
    pre = card.preprocessing
    if recorded is not None and meta.get("name") == card.name:
        pre = recorded
    elif meta.get("input_size"):
        pre = replace(pre, input_size=tuple(meta["input_size"]))
    folded = has_folded_batchnorm(state_dict)
    return Weights(source=str(weights), path=path, format=suffix.lstrip("."),
                   state_dict=state_dict, card=card, preprocessing=pre, metadata=meta,
                   folded_bn=folded)
