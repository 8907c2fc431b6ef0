"""Read a network's state dict from one local checkpoint file, whatever its format.

The file formats of :mod:`salseg.models.weights` (official ``.pth`` with or without wrapper
dicts and ``module.`` / ``_orig_mod.`` prefixes, Lightning ``.ckpt``, ``.safetensors``,
``.onnx``), read without resolving model-zoo names: the zoo's download check
(:mod:`salseg.zoo.validate`) reads its files through here, and :func:`salseg.weights.load.
read_state_dict` adds the name resolution on top.  Pickles are read with
``torch.load(weights_only=True)``.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import torch

from salseg.models.errors import WeightsError

PREFIXES = ("module.", "_orig_mod.")
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "params")
TASK_PREFIX = "model."  # where the LightningModules of salseg.tasks keep the network


def strip_prefixes(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for p in PREFIXES:
            if key.startswith(p):
                key, changed = key[len(p):], True
    return key


def unwrap_state_dict(obj: object, path: Path) -> Mapping[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
        for k in WRAPPER_KEYS:
            if k in obj and isinstance(obj[k], Mapping):
                return unwrap_state_dict(obj[k], path)
    raise WeightsError(f"{path}: no state dict found (top-level type {type(obj).__name__}"
                       + (f", keys {sorted(obj)[:8]}" if isinstance(obj, Mapping) else "") + ")")


def read_state_dict_file(path: Path, prefix: str | None = None) -> OrderedDict[str, torch.Tensor]:
    """The state dict in the local file ``path`` with wrapper prefixes removed (``prefix``: the
    sub-module of a Lightning checkpoint, default ``"model."``)."""
    path = Path(path)
    if path.stat().st_size == 0:
        raise WeightsError(f"{path}: checkpoint file is empty (0 bytes)")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            raw: Mapping[str, torch.Tensor] = load_file(str(path), device="cpu")
        except Exception as exc:  # noqa: BLE001 - re-raised with the file name
            raise WeightsError(f"{path}: not a readable safetensors file ({exc})") from exc
    elif suffix == ".onnx":
        from salseg.models.onnx_import import onnx_to_state_dict

        raw = onnx_to_state_dict(path)
    else:
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001
            raise WeightsError(f"{path}: cannot be read as a PyTorch checkpoint ({exc})") from exc
        if isinstance(obj, Mapping) and "state_dict" in obj and "pytorch-lightning_version" in obj:
            sd = obj["state_dict"]
            want = TASK_PREFIX if prefix is None else prefix
            raw = OrderedDict((k[len(want):], v) for k, v in sd.items() if k.startswith(want))
            if not raw:
                raise WeightsError(f"{path}: Lightning checkpoint has no weights under {want!r}")
        else:
            raw = unwrap_state_dict(obj, path)
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for k, v in raw.items():
        out[strip_prefixes(k)] = v
    return out


class Mismatch(NamedTuple):
    """How a state dict differs from a module's: keys missing, keys unexpected, and keys of
    another shape (``"key (got) != (want)"``), each sorted; a missing ``num_batches_tracked``
    is not counted (BatchNorm fills it in)."""

    missing: list[str]
    unexpected: list[str]
    shapes: list[str]

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.shapes)

    def groups(self) -> list[tuple[str, list[str]]]:
        """The non-empty groups as ``(field name, keys)``, in the order of the fields."""
        return [(kind, keys) for kind, keys in zip(self._fields, self) if keys]

    @staticmethod
    def listing(keys: list[str], limit: int) -> str:
        """The first ``limit`` keys, comma-separated, with ``, ...`` when there are more."""
        return ", ".join(keys[:limit]) + (", ..." if len(keys) > limit else "")


def compare_state_dicts(want: Mapping[str, torch.Tensor], got: Mapping[str, torch.Tensor]
                        ) -> Mismatch:
    """The :class:`Mismatch` of ``got`` against ``want`` (a module's ``state_dict()``, meta
    tensors are fine)."""
    def shapes(sd: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v.shape) for k, v in sd.items() if not k.endswith("num_batches_tracked")}

    w, g = shapes(want), shapes(got)
    return Mismatch(missing=sorted(set(w) - set(g)), unexpected=sorted(set(got) - set(want)),
                    shapes=[f"{k} {g[k]} != {w[k]}" for k in sorted(set(w) & set(g))
                            if w[k] != g[k]])


__all__ = ["PREFIXES", "TASK_PREFIX", "WRAPPER_KEYS", "Mismatch", "compare_state_dicts",
           "read_state_dict_file", "strip_prefixes",
           "unwrap_state_dict"]
