"""Weights files and a model, without names: strict loading, saving, guessing the architecture.

* ``load_state_dict(model, state_dict, source)`` loads strictly, and a mismatch raises
  ``WeightsError`` with the missing/unexpected keys summarised and, when the state dict matches
  another architecture, "this looks like a <name> checkpoint; use model=<name>";
* ``save_state_dict(model, path)`` writes ``.safetensors`` or a torch pickle atomically;
* ``guess_architecture(state_dict)`` names the registered architecture whose keys and shapes
  match.

Reading a path or a model-zoo name (``read_state_dict``, ``load_weights``, ``load_model``,
``checkpoint_meta``) is the weights room's (:mod:`salseg.weights.load`), which accepts:

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
"""
from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from salseg.models.errors import WeightsError
from salseg.models.registry import canonical_name, create_model, model_names
from salseg.models.state_dict_io import compare_state_dicts

__all__ = ["WeightsError", "guess_architecture", "load_state_dict", "save_state_dict"]


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


# how a load error names each group of a Mismatch, and how many keys it shows of it
_GROUP_LINES = {"missing": ("missing keys", 6), "unexpected": ("unexpected keys", 6),
                "shapes": ("shape mismatches", 3)}


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


def load_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str | Path,
                    name: str | None = None) -> nn.Module:
    """Load ``state_dict`` (read from ``source``) into ``model`` with ``strict=True``; raise
    ``WeightsError`` naming ``source`` on any mismatch."""
    path = source
    found = compare_state_dicts(model.state_dict(), state_dict)
    if found:
        target = canonical_name(name) if name else type(model).__name__
        lines = [f"{path}: checkpoint does not fit {target}"]
        for kind, keys in found.groups():
            label, limit = _GROUP_LINES[kind]
            lines.append(f"  {label}: {len(keys)} ({found.listing(keys, limit)})")
        guess = guess_architecture(state_dict)
        if guess is not None and guess != (canonical_name(name) if name else None):
            lines.append(f"  this looks like a {guess} checkpoint; use model={guess}")
        raise WeightsError("\n".join(lines))
    # A fresh dict without ``_metadata`` lets BatchNorm fill in a missing num_batches_tracked.
    model.load_state_dict(state_dict, strict=True)
    return model
