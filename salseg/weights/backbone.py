"""Start a network from its backbone's pretrained weights (``model.backbone_weights``).

``load_backbone_weights(model, card, spec)``: the backbone is the sub-module under the card's
``backbone_prefixes`` (e.g. BiRefNet's ``bb.``), its record the one registered under the
module's ``backbone_name`` (:mod:`salseg.models.backbones`).  ``spec`` is the name of one of the
record's pretrained sources (``imagenet``: downloaded once into the torch hub cache, its
SHA-256 checked when the record states one), a URL, or a local file.  The state dict is
key-mapped by the source and loaded strictly on the backbone's own keys
(:func:`salseg.models.backbones.load_pretrained`); a URL or file that is not a named source
uses the mapping of the record's first source.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from salseg.models.backbones import PretrainedSource, get_backbone, load_pretrained
from salseg.models.card import ModelCard
from salseg.models.errors import WeightsError
from salseg.models.state_dict_io import read_state_dict_file


def backbone_module(model: nn.Module, card: ModelCard) -> nn.Module:
    """The backbone sub-module of ``model`` (under the card's one ``backbone_prefixes``)."""
    prefixes = tuple(card.backbone_prefixes)
    if len(prefixes) != 1:
        raise WeightsError(f"model.backbone_weights: the {card.name} card names "
                           f"{len(prefixes)} backbone prefixes {list(prefixes)}; one is needed")
    return model.get_submodule(prefixes[0].rstrip("."))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(url: str, sha256: str | None = None, cache_dir: str | Path | None = None) -> Path:
    """The local file of ``url`` (downloaded once into ``cache_dir``, default the torch hub
    cache's ``checkpoints``; a partial download never takes the final name)."""
    parsed = urlparse(url)
    if parsed.scheme in ("", "file"):
        path = Path(parsed.path if parsed.scheme else url)
    else:
        folder = Path(cache_dir) if cache_dir else Path(torch.hub.get_dir()) / "checkpoints"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / Path(parsed.path).name
        if not path.is_file():
            try:
                torch.hub.download_url_to_file(url, str(path), progress=False)
            except Exception as exc:  # noqa: BLE001 - re-raised with the URL
                raise WeightsError(f"{url}: download failed ({exc})") from exc
    if not path.is_file():
        raise WeightsError(f"{path}: backbone weights file not found")
    if sha256 and _sha256(path) != sha256.lower():
        raise WeightsError(f"{path}: SHA-256 differs from the published {sha256}")
    return path


def load_backbone_weights(model: nn.Module, card: ModelCard, spec: str,
                          cache_dir: str | Path | None = None) -> PretrainedSource:
    """Load the backbone weights named by ``spec`` into ``model``'s backbone; return the
    source used (its key mapping)."""
    module = backbone_module(model, card)
    name = getattr(module, "backbone_name", None)
    if not name:
        raise WeightsError(f"model.backbone_weights={spec}: the backbone of {card.name} "
                           f"({type(module).__name__}) is not a registered backbone")
    record = get_backbone(name)
    if spec in record.pretrained:
        source = record.pretrained[spec]
        path = fetch(source.url, source.sha256, cache_dir)
    else:
        if "://" not in spec and not Path(spec).exists():
            raise WeightsError(f"model.backbone_weights={spec}: not a file or URL, nor a "
                               f"pretrained source of {name} ({sorted(record.pretrained)})")
        source = next(iter(record.pretrained.values()), None) or PretrainedSource(url=spec)
        path = fetch(spec, None, cache_dir)
    load_pretrained(module, read_state_dict_file(path), source, where=str(path))
    return source


__all__ = ["backbone_module", "fetch", "load_backbone_weights"]
