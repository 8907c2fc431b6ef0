"""U2-Net and U2-NetP (Qin et al., "U2-Net: Going Deeper with Nested U-Structure for Salient
Object Detection", Pattern Recognition 2020, §3.2 and Table 1).

A six-stage encoder of RSU blocks, a five-stage decoder, six side heads and a 1x1 fusion of the
six side *logits* (``outconv``).  State-dict keys, shapes and order equal the official
``U2NET(3, 1)`` / ``U2NETP(3, 1)``.

Unlike the official code, ``forward`` returns **logits** (no sigmoid), so that training can use
BCE-with-logits and mixed precision safely: a list of 7 maps at the input size, fused map first,
then side 1 .. side 6.  The model cards at the end of this module (``U2NET_CARD``,
``U2NETP_CARD``) say how the rest of salseg preprocesses, reads and exports them.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from salseg.models.blocks import RSU4, RSU4F, RSU5, RSU6, RSU7, upsample_like
from salseg.models.card import ModelCard, ModelOutputs, Preprocessing, register_card

_RSU_BY_HEIGHT = {7: RSU7, 6: RSU6, 5: RSU5, 4: RSU4, 0: RSU4F}  # 0 = the dilated RSU-4F

# (block height, in, mid, out) per stage; height 0 means RSU-4F.
U2NET_ENCODER = ((7, 3, 32, 64), (6, 64, 32, 128), (5, 128, 64, 256), (4, 256, 128, 512),
                 (0, 512, 256, 512), (0, 512, 256, 512))
U2NET_DECODER = ((0, 1024, 256, 512), (4, 1024, 128, 256), (5, 512, 64, 128), (6, 256, 32, 64),
                 (7, 128, 16, 64))  # stage5d, stage4d, stage3d, stage2d, stage1d
U2NETP_ENCODER = ((7, 3, 16, 64), (6, 64, 16, 64), (5, 64, 16, 64), (4, 64, 16, 64),
                  (0, 64, 16, 64), (0, 64, 16, 64))
U2NETP_DECODER = ((0, 128, 16, 64), (4, 128, 16, 64), (5, 128, 16, 64), (6, 128, 16, 64),
                  (7, 128, 16, 64))


def _block(cfg: Sequence[int], in_ch: int | None = None) -> nn.Module:
    height, cin, mid, cout = cfg
    return _RSU_BY_HEIGHT[height](cin if in_ch is None else in_ch, mid, cout)


def _pool() -> nn.MaxPool2d:
    return nn.MaxPool2d(2, stride=2, ceil_mode=True)


class U2NetBase(nn.Module):
    """The nested U-structure shared by U2-Net and U2-NetP (configured by stage tables)."""

    def __init__(self, encoder: Sequence[Sequence[int]], decoder: Sequence[Sequence[int]],
                 in_ch: int = 3, out_ch: int = 1) -> None:
        super().__init__()
        self.in_ch, self.out_ch = in_ch, out_ch
        for i, cfg in enumerate(encoder, start=1):
            self.add_module(f"stage{i}", _block(cfg, in_ch if i == 1 else None))
            if i < len(encoder):
                self.add_module(f"pool{i}{i + 1}", _pool())
        for i, cfg in zip(range(5, 0, -1), decoder):
            self.add_module(f"stage{i}d", _block(cfg))
        side_channels = [decoder[4 - i][3] for i in range(5)] + [encoder[5][3]]
        for i, ch in enumerate(side_channels, start=1):
            self.add_module(f"side{i}", nn.Conv2d(ch, out_ch, 3, padding=1))
        self.outconv = nn.Conv2d(6 * out_ch, out_ch, 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return 7 logit maps at the input size: ``[fused, side1, ..., side6]``."""
        enc = []
        hx = x
        for i in range(1, 7):
            if i > 1:
                hx = getattr(self, f"pool{i - 1}{i}")(hx)
            hx = getattr(self, f"stage{i}")(hx)
            enc.append(hx)
        dec = {6: enc[5]}
        hx = enc[5]
        for i in range(5, 0, -1):
            hx = getattr(self, f"stage{i}d")(torch.cat((upsample_like(hx, enc[i - 1]), enc[i - 1]), 1))
            dec[i] = hx
        d1 = self.side1(dec[1])
        sides = [d1] + [upsample_like(getattr(self, f"side{i}")(dec[i]), d1) for i in range(2, 7)]
        fused = self.outconv(torch.cat(sides, 1))
        return [fused, *sides]


class U2Net(U2NetBase):
    """Full U2-Net (44,009,869 parameters)."""

    def __init__(self, in_ch: int = 3, out_ch: int = 1) -> None:
        super().__init__(U2NET_ENCODER, U2NET_DECODER, in_ch, out_ch)


class U2NetP(U2NetBase):
    """U2-NetP, the 1.1M-parameter small version (1,131,181 parameters)."""

    def __init__(self, in_ch: int = 3, out_ch: int = 1) -> None:
        super().__init__(U2NETP_ENCODER, U2NETP_DECODER, in_ch, out_ch)


# -- model cards -----------------------------------------------------------------------------
def _outputs(raw: Sequence[torch.Tensor]) -> ModelOutputs:
    sides = list(raw)
    return ModelOutputs(sides=sides, features=[], prediction=sides[0])


def _to_official(raw: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The official ``forward``: 7 probability maps, fused first."""
    return [torch.sigmoid(t) for t in raw]


# Official ``u2net_test.py`` (OFFICIAL_NOTES §2.2-2.3): 320x320, scikit-image resize without
# anti-aliasing, image / its maximum, ImageNet statistics (R statistics on every channel of a
# grayscale image), min-max of the fused map, 8-bit truncation, PIL bilinear back to size.
U2NET_PREPROCESSING = Preprocessing(input_size=(320, 320), scale="max", gray="official",
                                    resize="skimage", restore="pil_uint8")
_U2NET_COMMON = dict(
    preprocessing=U2NET_PREPROCESSING, outputs=_outputs, to_official=_to_official,
    side_names=("fused", *(f"side{i}" for i in range(1, 7))),
    encoder_prefixes=tuple(f"stage{i}." for i in range(1, 7)),
    rembg_session="u2net_custom", default_aug="u2net_paper",
    loss={"bce": {"criterion": "bce", "outputs": "sides"}},  # muti_bce_loss_fusion: 7 BCEs, weights 1
)
U2NET_CARD = register_card(ModelCard(name="u2net", build=U2Net, official_manifest="u2net",
                                     **_U2NET_COMMON))
U2NETP_CARD = register_card(ModelCard(name="u2netp", build=U2NetP, aliases=("u2net_lite",),
                                      official_manifest="u2netp", **_U2NET_COMMON))
