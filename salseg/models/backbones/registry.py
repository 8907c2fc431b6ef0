"""The backbone registry (see :mod:`salseg.models.backbones`)."""
from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from salseg.models.errors import WeightsError

#: modules of salseg.models.backbones imported on first use (a missing one is skipped)
BUILTIN_MODULES = ("resnet", "swin")


@dataclass(frozen=True)
class PretrainedSource:
    """Where a backbone's pretrained weights come from and how their keys map.

    ``url`` (and ``sha256`` when known) of the published file; ``key_map(key) -> key | None``
    renames a source key to the backbone's key (``None`` drops it, e.g. a classifier head);
    ``description`` names the data and recipe (e.g. ImageNet-1k, torchvision V1);
    ``init_keys(key) -> bool`` names the backbone's keys the source does not hold, which keep
    their initialisation (e.g. the per-stage output norms of a dense-prediction Swin)."""

    url: str
    description: str = ""
    sha256: str | None = None
    key_map: Callable[[str], str | None] | None = None
    init_keys: Callable[[str], bool] | None = None


@dataclass(frozen=True)
class Backbone:
    """One backbone: ``build(**kw) -> nn.Module`` whose ``forward`` returns the stage features
    (a list, shallow to deep), ``channels`` per stage, ``strides`` per stage (relative to the
    input) and its named pretrained sources."""

    name: str
    build: Callable[..., nn.Module]
    channels: tuple[int, ...]
    strides: tuple[int, ...] = ()
    pretrained: Mapping[str, PretrainedSource] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()


_BACKBONES: dict[str, Backbone] = {}
_LOADED = False


def _load_builtin() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    for name in BUILTIN_MODULES:
        module = f"salseg.models.backbones.{name}"
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module)


def register_backbone(backbone: Backbone, replace: bool = False) -> Backbone:
    """Add ``backbone`` under its name and aliases (case-insensitive)."""
    keys = [backbone.name.lower(), *(a.lower() for a in backbone.aliases)]
    taken = [k for k in keys if k in _BACKBONES and _BACKBONES[k].name != backbone.name]
    if not replace and (taken or backbone.name.lower() in _BACKBONES):
        raise ValueError(f"backbone name(s) already registered: {taken or [backbone.name]}")
    for key in keys:
        _BACKBONES[key] = backbone
    return backbone


def get_backbone(name: str | Backbone) -> Backbone:
    if isinstance(name, Backbone):
        return name
    _load_builtin()
    key = str(name).lower()
    if key not in _BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; expected one of {sorted(_BACKBONES)}")
    return _BACKBONES[key]


def backbones() -> list[Backbone]:
    """Every registered backbone (once each, in registration order)."""
    _load_builtin()
    return list({id(b): b for b in _BACKBONES.values()}.values())


def load_pretrained(module: nn.Module, state_dict: Mapping[str, torch.Tensor],
                    source: PretrainedSource | None = None, where: str = "pretrained weights"
                    ) -> None:
    """Load a backbone's pretrained ``state_dict`` into ``module`` (the backbone itself).

    Source keys are renamed by ``source.key_map`` (a key mapped to ``None`` is dropped); the
    load is strict on the backbone's keys: every key of ``module`` must be given with its shape,
    and no other key may remain (except the source's ``init_keys``, which keep the module's
    values).  Errors name ``where`` (the file) and the keys."""
    mapping = source.key_map if source is not None and source.key_map else (lambda k: k)
    mapped: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        new = mapping(key)
        if new is not None:
            mapped[new] = value
    own = module.state_dict()
    if source is not None and source.init_keys is not None:
        for key in own:
            if key not in mapped and source.init_keys(key):
                mapped[key] = own[key]
    missing = sorted(set(own) - set(mapped))
    unexpected = sorted(set(mapped) - set(own))
    shapes = sorted(k for k in set(own) & set(mapped) if tuple(own[k].shape) != tuple(mapped[k].shape))
    if missing or unexpected or shapes:
        parts = [f"{len(missing)} missing keys (e.g. {missing[:3]})" if missing else "",
                 f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})" if unexpected else "",
                 f"shape mismatches at {shapes[:3]}" if shapes else ""]
        raise WeightsError(f"{where}: not weights of this backbone: "
                           + "; ".join(p for p in parts if p))
    module.load_state_dict(mapped, strict=True)
