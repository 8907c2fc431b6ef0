"""Weights named by a path or a model-zoo name: read, checked and loaded strictly.

* ``resolve_checkpoint(path)``: the local file for a path, or the cached model-zoo file a
  catalogue name names (downloaded, verified and converted on first use; a path that exists wins
  over a name; :mod:`salseg.zoo.resolve`).  Zoo failures become ``WeightsError``.
* ``read_state_dict(path)``: the network's state dict, wrapper prefixes removed
  (:func:`salseg.models.state_dict_io.read_state_dict_file`).
* ``load_weights(model, path)`` / ``load_model(name, path)``: strict loading
  (:func:`salseg.models.weights.load_state_dict`).
* ``checkpoint_meta(path)``: what a project ``.ckpt`` or a catalogue entry says about its model.

A missing file or a folder is refused with a message that points at the model-zoo name it may
have been meant as, or that it shadows.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from salseg.models.errors import WeightsError
from salseg.models.registry import canonical_name, create_model
from salseg.models.state_dict_io import read_state_dict_file
from salseg.models.weights import load_state_dict
from salseg.zoo.cache import ZooError
from salseg.zoo.catalogue import get_entry, is_zoo_name
from salseg.zoo.resolve import resolve_weights, zoo_entry_for, zoo_meta


def resolve_checkpoint(path: str | Path) -> Path:
    """A local file for ``path``: the path itself, or the model-zoo file a catalogue name names.

    Zoo failures (download, checksum, offline miss) become :class:`WeightsError`.
    """
    if zoo_entry_for(path) is None:
        return Path(path)
    try:
        return resolve_weights(path).path
    except ZooError as exc:
        raise WeightsError(str(exc)) from exc


def not_a_file_reason(path: Path) -> str:
    """Why ``path`` cannot be read as a checkpoint: a folder (perhaps shadowing a model-zoo
    name), or a missing file (perhaps meant as the zoo name its stem is)."""
    text = str(path)
    if path.is_dir():
        msg = f"{path}: is a folder, not a checkpoint file"
        if is_zoo_name(text):
            msg += (f"; it shadows the model-zoo name {get_entry(text).name!r} (an existing path "
                    "wins over a name): run from another folder, or pass the cached file "
                    f"(salseg-models path {get_entry(text).name})")
        return msg
    msg = f"{path}: checkpoint file not found (nor a model-zoo name; see salseg-models list)"
    stem = path.stem if path.suffix.lower() in (".pth", ".pt", ".onnx", ".safetensors",
                                                ".ckpt") else None
    if stem and path.parent == Path(".") and is_zoo_name(stem):
        msg += f"; did you mean the model-zoo name {get_entry(stem).name!r}?"
    return msg


def read_state_dict(path: str | Path, prefix: str | None = None) -> OrderedDict[str, torch.Tensor]:
    """Read the network's state dict from any supported file or model-zoo name, with wrapper
    prefixes removed (:func:`salseg.models.state_dict_io.read_state_dict_file`).

    ``prefix`` selects a sub-module of a Lightning checkpoint (default ``"model."``); for other
    files, keys are only stripped of ``module.`` / ``_orig_mod.``.
    """
    path = resolve_checkpoint(path)
    if not path.is_file():
        raise WeightsError(not_a_file_reason(path))
    return read_state_dict_file(path, prefix)


def load_weights(model: nn.Module, path: str | Path, name: str | None = None,
                 prefix: str | None = None) -> nn.Module:
    """Load ``path`` into ``model`` with ``strict=True``; raise ``WeightsError`` on any mismatch."""
    return load_state_dict(model, read_state_dict(path, prefix=prefix), path, name=name)


def load_model(name: str, path: str | Path | None = None, **kwargs) -> nn.Module:
    """Build ``name`` and, when ``path`` is given, load its weights strictly."""
    model = create_model(name, **kwargs)
    if path is not None:
        load_weights(model, path, name=name)
    return model


def checkpoint_meta(path: str | Path) -> dict:
    """What a project ``.ckpt`` says about its model: ``{"name": ..., "input_size": [h, w]}``.

    Empty for other files.  Training stores the architecture name and the resolution it was
    trained/validated at, so evaluation and prediction default to the same preprocessing.
    For a model-zoo name: the catalogue's architecture, ``out_ch``, ``prediction``, ``classes``,
    ``preprocessing`` overrides and ``zoo`` (the entry name); nothing is downloaded.
    """
    entry = zoo_entry_for(path)
    if entry is not None:
        return zoo_meta(entry)
    path = Path(path)
    if path.suffix.lower() != ".ckpt" or not path.is_file():
        return {}
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise WeightsError(f"{path}: cannot be read as a PyTorch checkpoint ({exc})") from exc
    hp = obj.get("hyper_parameters", {}) if isinstance(obj, Mapping) else {}
    meta = {}
    if hp.get("name"):
        meta["name"] = canonical_name(str(hp["name"]))
    if hp.get("input_size"):
        meta["input_size"] = [int(s) for s in hp["input_size"]]
    return meta
