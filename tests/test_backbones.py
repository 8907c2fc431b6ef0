"""The backbones room: records, torchvision ResNet-34, key-mapped strict pretrained loading."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models import resnet34

from salseg.models.backbones import (
    Backbone,
    backbones,
    get_backbone,
    load_pretrained,
    register_backbone,
)
from salseg.models.backbones.registry import _BACKBONES
from salseg.models.errors import WeightsError


def test_resnet34_record_matches_its_module():
    record = get_backbone("ResNet34")
    net = record.build().eval()
    with torch.no_grad():
        feats = net(torch.zeros(1, 3, 64, 64))
    assert tuple(f.shape[1] for f in feats) == record.channels
    assert tuple(64 // f.shape[-1] for f in feats) == record.strides
    assert record in backbones()


def test_imagenet_weights_load_key_mapped_and_strict():
    """torchvision's own ResNet-34 state dict (classifier included) loads into the backbone
    through the source's key map; a foreign or truncated state dict is a clear error."""
    record = get_backbone("resnet34")
    source = record.pretrained["imagenet"]
    torch.manual_seed(0)
    tv = resnet34(weights=None).state_dict()
    net = record.build()
    load_pretrained(net, tv, source, where="resnet34-b627a593.pth")
    assert torch.equal(net.state_dict()["layer4.2.bn2.running_var"], tv["layer4.2.bn2.running_var"])
    missing = {k: v for k, v in tv.items() if not k.startswith("layer4.")}
    with pytest.raises(WeightsError, match=r"r34.pth: not weights of this backbone: \d+ missing"):
        load_pretrained(net, missing, source, where="r34.pth")
    with pytest.raises(WeightsError, match="unexpected keys"):
        load_pretrained(net, {**tv, "head.weight": torch.zeros(1)}, source, where="x.pth")


def test_a_module_registers_a_backbone_by_name():
    """What swin.py does for swin_v1_t / swin_v1_l: register a record by name."""
    toy = Backbone(name="toy_bb", build=lambda: nn.Conv2d(3, 8, 3), channels=(8,),
                   aliases=("toy_backbone",))
    try:
        register_backbone(toy)
        assert get_backbone("TOY_BACKBONE") is toy
        with pytest.raises(ValueError, match="already registered"):
            register_backbone(toy)
    finally:
        _BACKBONES.pop("toy_bb", None)
        _BACKBONES.pop("toy_backbone", None)
    with pytest.raises(ValueError, match="unknown backbone 'toy_bb'"):
        get_backbone("toy_bb")
