"""The weights room: one :func:`resolve` from whatever names weights (a path, a model-zoo name,
``.pth``, ``.ckpt``, ``.safetensors``, ``.onnx``) to a typed :class:`Weights` (the state dict,
read once; the card; the preprocessing the weights were trained with; the metadata; whether
the BatchNorm statistics are folded).  Loading a backbone's pretrained weights (key-mapped,
strict on the backbone's keys) is :func:`salseg.models.backbones.load_pretrained`; starting a
network from them (``model.backbone_weights``) is :func:`load_backbone_weights`.

The older entry points stay where they were: :mod:`salseg.models.weights` (``load_weights``,
``read_state_dict``, ``checkpoint_meta``) and :mod:`salseg.zoo.resolve`.
"""
from salseg.weights.backbone import load_backbone_weights
from salseg.weights.resolve import Weights, resolve

__all__ = ["Weights", "load_backbone_weights", "resolve"]
