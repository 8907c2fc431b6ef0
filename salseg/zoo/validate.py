"""Is a downloaded file what its catalogue entry says?  Checked before an unpinned source's
sha256 is recorded (trust on first use, :mod:`salseg.zoo.cache`), so that an HTML page or any
other wrong body answered with ``200`` is never cached, pinned and then refused forever.

A file passes when it loads as its format (``.pth``: ``torch.load(weights_only=True)``, no code
runs; ``.safetensors``; ``.onnx``: the project's ONNX importer) and its tensors fit the entry's
architecture (:func:`salseg.models.registry.create_model` with the entry's ``out_ch``, built on
the meta device): the same keys with the same shapes.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from salseg.zoo.catalogue import Source, ZooEntry

# how the download check names each group of a Mismatch
_GROUP_WORDS = {"missing": "missing tensor(s)", "unexpected": "unexpected tensor(s)",
                "shapes": "of another shape"}


def _fits(state_dict: Mapping[str, torch.Tensor], entry: ZooEntry) -> str | None:
    """Why ``state_dict`` does not fit ``entry``'s architecture, or ``None`` when it does."""
    from salseg.models.registry import create_model
    from salseg.models.state_dict_io import compare_state_dicts

    with torch.device("meta"):
        model = create_model(entry.architecture, **entry.model_kwargs)
    found = compare_state_dicts(model.state_dict(), state_dict)
    if not found:
        return None
    return "; ".join(f"{len(keys)} {_GROUP_WORDS[kind]} ({found.listing(keys, 4)})"
                     for kind, keys in found.groups())


def read_tensors(path: Path, fmt: str, entry: ZooEntry) -> Mapping[str, torch.Tensor]:
    """The state dict in ``path`` read as ``fmt`` (pth / safetensors / onnx)."""
    from salseg.models.errors import WeightsError
    from salseg.models.state_dict_io import read_state_dict_file

    if fmt == "safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    if fmt == "onnx":
        from salseg.models.onnx_import import onnx_to_state_dict

        return onnx_to_state_dict(path, entry.architecture)
    with open(path, "rb") as fh:
        head = fh.read(16)
    if not head.startswith((b"PK\x03\x04", b"\x80")):  # torch.save: a zip archive or a pickle
        raise ValueError(f"neither a zip archive nor a pickle; it starts with {head!r}")
    try:  # a suffix other than .safetensors / .onnx: torch.load(weights_only=True)
        return read_state_dict_file(path)
    except WeightsError as exc:
        raise ValueError(str(exc).replace(f"{path}: ", "")) from None


def validate_download(path: Path, source: Source, entry: ZooEntry) -> None:
    """Raise :class:`~salseg.zoo.cache.ZooError` unless ``path`` is a loadable ``source.format``
    file whose tensors fit ``entry``'s architecture."""
    from salseg.zoo.errors import ZooError

    kind = {"pth": "PyTorch checkpoint (weights_only)", "onnx": "ONNX graph",
            "safetensors": "safetensors file"}.get(source.format, source.format)
    try:
        tensors = read_tensors(path, source.format, entry)
    except Exception as exc:  # noqa: BLE001 - any failure to load is the same verdict
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ZooError(f"not a loadable {kind} ({text[:300]})") from None
    why = _fits(tensors, entry)
    if why is not None:
        raise ZooError(f"the {kind} does not fit {entry.architecture} "
                       f"(out_ch={entry.out_ch}) of {entry.name}: {why}")
