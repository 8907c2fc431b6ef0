"""Load any checkpoint of U2-Net / U2-NetP / IS-Net / the GT encoder into a model, strictly.

Accepted files:

* official ``.pth`` files (``u2net.pth``, ``u2netp.pth``, ``isnet.pth``, ``isnet-general-use.pth``):
  a plain state dict, possibly wrapped in ``{"state_dict": ...}`` / ``{"model": ...}`` and
  possibly with ``module.`` (DataParallel) or ``_orig_mod.`` (torch.compile) key prefixes;
* Lightning ``.ckpt`` files of this project (the model lives under ``model.`` in the task);
* ``.safetensors`` files;
* ``.onnx`` files (:mod:`salseg.models.onnx_import`);
* model-zoo names (``u2netp``, ``isnet-general-use``, ... see :mod:`salseg.zoo`): downloaded,
  verified and converted on first use; a path that exists wins over a name.

Pickles are read with ``torch.load(weights_only=True)``: no code from an untrusted file runs.
Old checkpoints without ``num_batches_tracked`` load because ``nn.BatchNorm2d`` itself fills the
buffer in when the state dict carries no version metadata.
A mismatch raises ``WeightsError`` with the missing/unexpected keys summarised and, when the file
matches another architecture, the sentence "this looks like a <name> checkpoint; use model=<name>".
"""
from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from salseg.models.errors import WeightsError
from salseg.models.registry import canonical_name, create_model, model_names
from salseg.models.state_dict_io import compare_state_dicts, read_state_dict_file


def resolve_checkpoint(path: str | Path) -> Path:
    """A local file for ``path``: the path itself, or the model-zoo file a catalogue name names.

    Zoo failures (download, checksum, offline miss) become :class:`WeightsError`.
    """
    from salseg.zoo.resolve import resolve_weights, zoo_entry_for

    if zoo_entry_for(path) is None:
        return Path(path)
    from salseg.zoo.cache import ZooError

    try:
        return resolve_weights(path).path
    except ZooError as exc:
        raise WeightsError(str(exc)) from exc


def _not_a_file(path: Path) -> str:
    """Why ``path`` cannot be read as a checkpoint: a folder (perhaps shadowing a model-zoo
    name), or a missing file (perhaps meant as the zoo name its stem is)."""
    from salseg.zoo.catalogue import get_entry, is_zoo_name

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
        raise WeightsError(_not_a_file(path))
    return read_state_dict_file(path, prefix)


@functools.cache
def _signature(name: str) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = create_model(name)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def guess_architecture(state_dict: Mapping[str, torch.Tensor]) -> str | None:
    """The registry name whose state-dict keys and shapes match ``state_dict``, if any."""
    keys = {k: tuple(v.shape) for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
    for name in model_names():
        sig = {k: s for k, s in _signature(name).items() if not k.endswith("num_batches_tracked")}
        if sig == keys:
            return name
    return None


def _summarise(keys: list[str], limit: int = 6) -> str:
    shown = ", ".join(keys[:limit])
    return f"{len(keys)} ({shown}{', ...' if len(keys) > limit else ''})"


def load_weights(model: nn.Module, path: str | Path, name: str | None = None,
                 prefix: str | None = None) -> nn.Module:
    """Load ``path`` into ``model`` with ``strict=True``; raise ``WeightsError`` on any mismatch."""
    state_dict = read_state_dict(path, prefix=prefix)
    missing, unexpected, wrong_shape = found = compare_state_dicts(model.state_dict(), state_dict)
    if found:
        target = canonical_name(name) if name else type(model).__name__
        lines = [f"{path}: checkpoint does not fit {target}"]
        if missing:
            lines.append(f"  missing keys: {_summarise(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys: {_summarise(unexpected)}")
        if wrong_shape:
            lines.append(f"  shape mismatches: {_summarise(wrong_shape, 3)}")
        guess = guess_architecture(state_dict)
        if guess is not None and guess != (canonical_name(name) if name else None):
            lines.append(f"  this looks like a {guess} checkpoint; use model={guess}")
        raise WeightsError("\n".join(lines))
    # A fresh dict without ``_metadata`` lets BatchNorm fill in a missing num_batches_tracked.
    model.load_state_dict(state_dict, strict=True)
    return model


def load_model(name: str, path: str | Path | None = None, **kwargs) -> nn.Module:
    """Build ``name`` and, when ``path`` is given, load its weights strictly."""
    model = create_model(name, **kwargs)
    if path is not None:
        load_weights(model, path, name=name)
    return model


def save_state_dict(model: nn.Module, path: str | Path) -> Path:
    """Save ``model``'s state dict atomically (``.safetensors`` or a torch pickle by suffix)."""
    from salseg.atomic import atomic_output

    path = Path(path)
    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_output(path, overwrite=True) as tmp:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import save_file

            save_file(sd, str(tmp))
            from salseg.atomic import follow_umask

            follow_umask(tmp)  # save_file replaces the file with a new 0600 one
        else:
            torch.save(sd, tmp)
    return path


def checkpoint_meta(path: str | Path) -> dict:
    """What a project ``.ckpt`` says about its model: ``{"name": ..., "input_size": [h, w]}``.

    Empty for other files.  Training stores the architecture name and the resolution it was
    trained/validated at, so evaluation and prediction default to the same preprocessing.
    For a model-zoo name: the catalogue's architecture, ``out_ch``, ``prediction``, ``classes``,
    ``preprocessing`` overrides and ``zoo`` (the entry name); nothing is downloaded.
    """
    from salseg.zoo.resolve import zoo_entry_for, zoo_meta

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
