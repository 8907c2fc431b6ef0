"""The weights room: one :func:`resolve` from whatever names weights (a path, a model-zoo name,
``.pth``, ``.ckpt``, ``.safetensors``, ``.onnx``) to a typed :class:`Weights` (the state dict,
read once; the card; the preprocessing the weights were trained with; the metadata; whether
the BatchNorm statistics are folded).  Loading a backbone's pretrained weights (key-mapped,
strict on the backbone's keys) is :func:`salseg.models.backbones.load_pretrained`; starting a
network from them (``model.backbone_weights``) is :func:`load_backbone_weights`.

Reading weights named by a path or a model-zoo name into a model (``load_weights``,
``load_model``, ``read_state_dict``, ``checkpoint_meta``) is :mod:`salseg.weights.load`;
name-free helpers (strict loading of a state dict, saving, guessing the architecture) are
:mod:`salseg.models.weights`.
"""
from salseg.weights.backbone import load_backbone_weights
from salseg.weights.load import checkpoint_meta, load_model, load_weights, read_state_dict
from salseg.weights.resolve import Weights, resolve

__all__ = ["Weights", "checkpoint_meta", "load_backbone_weights", "load_model", "load_weights",
           "read_state_dict", "resolve"]
