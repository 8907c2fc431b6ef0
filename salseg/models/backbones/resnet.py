"""torchvision's ResNet-34 as a backbone (BASNet's encoder, Qin et al. 2019).

The module keeps torchvision's parameter names (``conv1``, ``bn1``, ``layer1..4``) so that
torchvision's ImageNet weights load key for key (the classifier ``fc`` is dropped); its
``forward`` returns the stem output and the four stage outputs (64, 64, 128, 256, 512
channels at strides 2, 4, 8, 16, 32).
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision.models import resnet34

from salseg.models.backbones.registry import Backbone, PretrainedSource, register_backbone


class ResNetFeatures(nn.Module):
    """A torchvision ResNet without its pooling and classifier, returning every stage."""

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        net = resnet34(weights=None)
        if in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            net.layer1, net.layer2, net.layer3, net.layer4)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        stem = self.relu(self.bn1(self.conv1(x)))
        c1 = self.layer1(self.maxpool(stem))
        c2 = self.layer2(c1)
        c3 = self.layer3(c2)
        return [stem, c1, c2, c3, self.layer4(c3)]


def _torchvision_keys(key: str) -> str | None:
    return None if key.startswith("fc.") else key


RESNET34 = register_backbone(Backbone(
    name="resnet34", build=ResNetFeatures, channels=(64, 64, 128, 256, 512),
    strides=(2, 4, 8, 16, 32),
    pretrained={"imagenet": PretrainedSource(
        url="https://download.pytorch.org/models/resnet34-b627a593.pth",
        description="ImageNet-1k, torchvision ResNet34_Weights.IMAGENET1K_V1",
        key_map=_torchvision_keys)}))
