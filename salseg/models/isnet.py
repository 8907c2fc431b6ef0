"""IS-Net (Qin et al., "Highly Accurate Dichotomous Image Segmentation", ECCV 2022, §4).

* ``ISNet``: the segmentation network (official ``ISNetDIS``).  A plain stride-2 3x3 ``conv_in``
  (no BatchNorm, no ReLU) brings the input to H/2, then a U2-Net-like encoder/decoder of RSU
  blocks.  Six side heads, each upsampled to the *input* size; there is no fusion: side 1 is the
  prediction.  The six feature maps used for intermediate supervision are the decoder outputs
  ``stage1d .. stage5d`` and the last encoder stage ``stage6`` (64, 64, 128, 256, 512, 512
  channels at H/2 .. H/64).
* ``ISNetGTEncoder``: the ground-truth encoder used for feature synchronisation.  Input is the
  1-channel mask; ``conv_in`` is conv (stride 2) + BatchNorm + ReLU; six encoder stages with
  side heads; its features ``stage1 .. stage6`` have the same channel/size pyramid as ISNet's.

``forward`` returns ``(sides, features)``: 6 side **logits** at the input size (side 1 first)
and the 6 feature maps.  The model cards at the end of this module (``ISNET_CARD``,
``GT_ENCODER_CARD``) say how the rest of salseg preprocesses, reads and exports them.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from salseg.models.blocks import RSU4, RSU4F, RSU5, RSU6, RSU7, upsample_like
from salseg.models.card import ModelCard, ModelOutputs, Preprocessing, register_card


def _pool() -> nn.MaxPool2d:
    return nn.MaxPool2d(2, stride=2, ceil_mode=True)


class ConvBNReLU(nn.Module):
    """Conv (with stride) -> BatchNorm -> ReLU; keys ``conv.*`` and ``bn.*`` (GT encoder input)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, stride: int = 1,
                 padding: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, stride=stride, padding=padding)
        self.bn = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class ISNet(nn.Module):
    """IS-Net segmentation network (44,046,790 parameters)."""

    def __init__(self, in_ch: int = 3, out_ch: int = 1) -> None:
        super().__init__()
        self.in_ch, self.out_ch = in_ch, out_ch
        self.conv_in = nn.Conv2d(in_ch, 64, 3, stride=2, padding=1)
        self.stage1 = RSU7(64, 32, 64)
        self.pool12 = _pool()
        self.stage2 = RSU6(64, 32, 128)
        self.pool23 = _pool()
        self.stage3 = RSU5(128, 64, 256)
        self.pool34 = _pool()
        self.stage4 = RSU4(256, 128, 512)
        self.pool45 = _pool()
        self.stage5 = RSU4F(512, 256, 512)
        self.pool56 = _pool()
        self.stage6 = RSU4F(512, 256, 512)
        self.stage5d = RSU4F(1024, 256, 512)
        self.stage4d = RSU4(1024, 128, 256)
        self.stage3d = RSU5(512, 64, 128)
        self.stage2d = RSU6(256, 32, 64)
        self.stage1d = RSU7(128, 16, 64)
        for i, ch in enumerate((64, 64, 128, 256, 512, 512), start=1):
            self.add_module(f"side{i}", nn.Conv2d(ch, out_ch, 3, padding=1))

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Return ``(sides, features)``: 6 side logits at input size and 6 feature maps."""
        hx = self.conv_in(x)
        hx1 = self.stage1(hx)
        hx2 = self.stage2(self.pool12(hx1))
        hx3 = self.stage3(self.pool23(hx2))
        hx4 = self.stage4(self.pool34(hx3))
        hx5 = self.stage5(self.pool45(hx4))
        hx6 = self.stage6(self.pool56(hx5))
        hx5d = self.stage5d(torch.cat((upsample_like(hx6, hx5), hx5), 1))
        hx4d = self.stage4d(torch.cat((upsample_like(hx5d, hx4), hx4), 1))
        hx3d = self.stage3d(torch.cat((upsample_like(hx4d, hx3), hx3), 1))
        hx2d = self.stage2d(torch.cat((upsample_like(hx3d, hx2), hx2), 1))
        hx1d = self.stage1d(torch.cat((upsample_like(hx2d, hx1), hx1), 1))
        features = [hx1d, hx2d, hx3d, hx4d, hx5d, hx6]
        sides = [upsample_like(getattr(self, f"side{i}")(f), x) for i, f in enumerate(features, 1)]
        return sides, features


class ISNetGTEncoder(nn.Module):
    """IS-Net ground-truth encoder (6,877,734 parameters), trained on masks (phase 1)."""

    def __init__(self, in_ch: int = 1, out_ch: int = 1) -> None:
        super().__init__()
        self.in_ch, self.out_ch = in_ch, out_ch
        self.conv_in = ConvBNReLU(in_ch, 16, 3, stride=2, padding=1)
        self.stage1 = RSU7(16, 16, 64)
        self.pool12 = _pool()
        self.stage2 = RSU6(64, 16, 64)
        self.pool23 = _pool()
        self.stage3 = RSU5(64, 32, 128)
        self.pool34 = _pool()
        self.stage4 = RSU4(128, 32, 256)
        self.pool45 = _pool()
        self.stage5 = RSU4F(256, 64, 512)
        self.pool56 = _pool()
        self.stage6 = RSU4F(512, 64, 512)
        for i, ch in enumerate((64, 64, 128, 256, 512, 512), start=1):
            self.add_module(f"side{i}", nn.Conv2d(ch, out_ch, 3, padding=1))

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Return ``(sides, features)``: 6 side logits at input size and 6 encoder features."""
        hx = self.conv_in(x)
        hx1 = self.stage1(hx)
        hx2 = self.stage2(self.pool12(hx1))
        hx3 = self.stage3(self.pool23(hx2))
        hx4 = self.stage4(self.pool34(hx3))
        hx5 = self.stage5(self.pool45(hx4))
        hx6 = self.stage6(self.pool56(hx5))
        features = [hx1, hx2, hx3, hx4, hx5, hx6]
        sides = [upsample_like(getattr(self, f"side{i}")(f), x) for i, f in enumerate(features, 1)]
        return sides, features


# -- model cards -----------------------------------------------------------------------------
def _outputs(raw: tuple[Sequence[torch.Tensor], Sequence[torch.Tensor]]) -> ModelOutputs:
    sides, features = list(raw[0]), list(raw[1])
    return ModelOutputs(sides=sides, features=features, prediction=sides[0])


def _to_official(raw: tuple[Sequence[torch.Tensor], Sequence[torch.Tensor]]
                 ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The official ``forward``: ``([6 probabilities], [6 features])``."""
    sides, feats = raw
    return [torch.sigmoid(t) for t in sides], list(feats)


_SIDES = tuple(f"side{i}" for i in range(1, 7))
_FEATURES = tuple(f"feat{i}" for i in range(1, 7))
_ENCODER = ("conv_in", *(f"stage{i}." for i in range(1, 7)))
# muti_loss_fusion (6 side BCEs) and muti_loss_fusion_kl (+ MSE to the GT encoder's features)
_BCE_LOSS = {"bce": {"criterion": "bce", "outputs": "sides"}}
_SYNC_LOSS = {**_BCE_LOSS, "sync": {"criterion": "feature", "mode": "MSE", "outputs": "features",
                                    "target": "gt_encoder"}}

# Official ``Inference.py`` (OFFICIAL_NOTES §3.4, §3.6): 1024x1024, F.interpolate bilinear then
# uint8 truncation, /255, mean 0.5, std 1.0 (a grayscale image is replicated: the official DIS
# loader; equal statistics on every channel, so both gray rules agree), side 1 resized in float
# then min-max.
ISNET_PREPROCESSING = Preprocessing(input_size=(1024, 1024), scale="255", mean=(0.5, 0.5, 0.5),
                                    std=(1.0, 1.0, 1.0), gray="per_channel",
                                    resize="torch_trunc", restore="float")
# The GT encoder takes the mask itself in [0, 1]: no normalisation.
GT_ENCODER_PREPROCESSING = Preprocessing(input_size=(1024, 1024), scale="255", mean=(0.0,),
                                         std=(1.0,), gray="per_channel", resize="torch_trunc",
                                         restore="float", in_channels=1)

GT_ENCODER_CARD = register_card(ModelCard(
    name="isnet_gt_encoder", build=ISNetGTEncoder, preprocessing=GT_ENCODER_PREPROCESSING,
    outputs=_outputs, to_official=_to_official, side_names=_SIDES, feature_names=_FEATURES,
    aliases=("gt_encoder",), encoder_prefixes=_ENCODER, loss=_BCE_LOSS,
    default_aug="isnet_paper", takes_masks=True, official_manifest="isnet_gt_encoder"))
ISNET_CARD = register_card(ModelCard(
    name="isnet", build=ISNet, preprocessing=ISNET_PREPROCESSING, outputs=_outputs,
    to_official=_to_official, side_names=_SIDES, feature_names=_FEATURES,
    aliases=("isnetdis", "isnet_dis", "isnet-general-use"), encoder_prefixes=_ENCODER,
    rembg_session="dis_custom", default_aug="isnet_paper", loss=_SYNC_LOSS,
    gt_encoder="isnet_gt_encoder", official_manifest="isnetdis"))
