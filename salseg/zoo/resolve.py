"""A checkpoint argument (a path or a catalogue name) -> a local, verified weights file.

This is the one place names are resolved: :func:`salseg.weights.load.read_state_dict` and
:func:`salseg.weights.load.checkpoint_meta` call it, so every command and API that takes a
checkpoint path (salseg-predict ``--weights``, salseg-eval ``ckpt=``, salseg-export, fine-tuning
``model.init_weights=``, the Predictor, serving) accepts a catalogue name too.  A path that
exists always wins over a name.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from salseg.zoo.catalogue import Source, ZooEntry, get_entry, is_zoo_name


@dataclass(frozen=True)
class ResolvedWeights:
    """Where the weights are, and the catalogue entry they come from (if any)."""

    path: Path
    entry: ZooEntry | None = None
    source: Source | None = None

    @property
    def folded_bn(self) -> bool:
        """Whether the weights come from a graph with BatchNorm folded into the convolutions."""
        return self.source is not None and self.source.format == "onnx"


def zoo_entry_for(weights: object) -> ZooEntry | None:
    """The catalogue entry ``weights`` names, or ``None`` (also when it is an existing path)."""
    if not isinstance(weights, (str, Path)):
        return None
    text = str(weights)
    if Path(text).exists() or not is_zoo_name(text):
        return None
    return get_entry(text)


def resolve_weights(weights: str | Path, progress: bool = True) -> ResolvedWeights:
    """Resolve a checkpoint argument; names are downloaded / converted on first use."""
    entry = zoo_entry_for(weights)
    if entry is None:
        return ResolvedWeights(Path(weights))
    from salseg.zoo.cache import fetch

    path, source = fetch(entry, progress=progress)
    if source.format == "onnx":
        from salseg.zoo.convert import convert_onnx

        path = convert_onnx(entry, path)
    return ResolvedWeights(path, entry, source)


def zoo_meta(entry: ZooEntry) -> dict:
    """What a catalogue entry says about its model, in :func:`checkpoint_meta`'s vocabulary."""
    meta: dict = {"name": entry.architecture, "zoo": entry.name, "out_ch": entry.out_ch,
                  "prediction": entry.prediction, "classes": list(entry.classes),
                  "preprocessing": entry.preprocessing_overrides()}
    if entry.input_size is not None:
        meta["input_size"] = list(entry.input_size)
    return meta
