"""Backbones: encoders shared by architectures, each described by a :class:`Backbone` record
(like a model card): its constructor, the channels of its stages, and where pretrained
weights come from.

A backbone module registers its records with :func:`register_backbone` (torchvision's
ResNet-34 for BASNet in :mod:`salseg.models.backbones.resnet`; Swin ``swin_v1_t`` /
``swin_v1_l`` for BiRefNet register from their own module the same way).  :func:`get_backbone`
imports the built-in backbone modules on first use.  :func:`load_pretrained` loads a source's
state dict into a backbone (key-mapped, strict on the backbone's own keys).
"""
from salseg.models.backbones.registry import (
    Backbone,
    PretrainedSource,
    backbones,
    get_backbone,
    load_pretrained,
    register_backbone,
)

__all__ = ["Backbone", "PretrainedSource", "backbones", "get_backbone", "load_pretrained",
           "register_backbone"]
