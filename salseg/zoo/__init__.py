"""Pretrained model zoo: named public checkpoints of U2-Net / U2-NetP / IS-Net, downloaded,
verified, cached and (for ONNX files) converted to state dicts on first use.

* :mod:`salseg.zoo.catalogue` - the catalogue as data (one :class:`ZooEntry` per checkpoint);
* :mod:`salseg.zoo.cache` - downloads, checksums, the cache under ``$SALSEG_HOME``;
* :mod:`salseg.zoo.validate` - is a download the kind of file its entry says (before trusting it);
* :mod:`salseg.zoo.convert` - ONNX source -> checked, cached ``.safetensors`` state dict;
* :mod:`salseg.zoo.resolve` - a checkpoint argument (path or catalogue name) -> a local file;
* :mod:`salseg.zoo.published` - the papers' published scores, for side-by-side reports.

See docs/zoo.md.
"""
from salseg.zoo.catalogue import Source, ZooEntry, entries, get_entry, is_zoo_name
from salseg.zoo.resolve import ResolvedWeights, resolve_weights

__all__ = ["ResolvedWeights", "Source", "ZooEntry", "entries", "get_entry", "is_zoo_name",
           "resolve_weights"]
