"""Building blocks of U2-Net and IS-Net: ``REBNCONV`` and the residual U-blocks RSU-L / RSU-4F.

Reimplemented from the U2-Net paper (Qin et al. 2020, §3.1, Fig. 2) with the exact layout of
the official code, so that official state dicts load with ``strict=True``:

* ``REBNCONV``: 3x3 conv (padding = dilation = ``dirate``, bias) -> BatchNorm2d (eps 1e-5,
  momentum 0.1) -> ReLU; state-dict keys ``conv_s1.*`` and ``bn_s1.*``.
* ``RSU(L)``: an input conv ``rebnconvin``, an encoder of ``L - 1`` convs separated by
  ``L - 2`` max-pools (2x2, stride 2, ``ceil_mode=True``), a dilated bottom conv
  ``rebnconv{L}`` (dilation 2), a decoder ``rebnconv{L-1}d .. rebnconv1d`` fed with
  ``cat(upsampled deeper, skip)`` (deeper first), and the residual ``hx1d + hxin``.
* ``RSU4F``: the same U-shape without pooling, dilations 1, 2, 4, 8 in the encoder.

Upsampling is bilinear to the skip's size with ``align_corners=False``, so any input size works.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def upsample_like(src: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Bilinearly resize ``src`` to the spatial size of ``target`` (``align_corners=False``)."""
    if src.shape[-2:] == target.shape[-2:]:
        return src
    return F.interpolate(src, size=target.shape[-2:], mode="bilinear", align_corners=False)


class REBNCONV(nn.Module):
    """3x3 convolution -> BatchNorm -> ReLU, with dilation ``dirate``."""

    def __init__(self, in_ch: int = 3, out_ch: int = 3, dirate: int = 1) -> None:
        super().__init__()
        self.conv_s1 = nn.Conv2d(in_ch, out_ch, 3, padding=dirate, dilation=dirate)
        self.bn_s1 = nn.BatchNorm2d(out_ch)
        self.relu_s1 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu_s1(self.bn_s1(self.conv_s1(x)))


def _pool() -> nn.MaxPool2d:
    return nn.MaxPool2d(2, stride=2, ceil_mode=True)


class RSU(nn.Module):
    """Residual U-block of height ``height`` (RSU-7, -6, -5 or -4 in the paper).

    Submodules are registered as ``rebnconvin``, ``rebnconv1`` ... ``rebnconv{L}``,
    ``pool1`` ... ``pool{L-2}`` and ``rebnconv{L-1}d`` ... ``rebnconv1d`` as in the official code.
    """

    checkpoint_unit = True  # model.activation_checkpointing recomputes the whole block

    def __init__(self, height: int, in_ch: int, mid_ch: int, out_ch: int) -> None:
        super().__init__()
        if height < 3:
            raise ValueError(f"RSU height must be >= 3, got {height}")
        self.height = height
        self.rebnconvin = REBNCONV(in_ch, out_ch, dirate=1)
        self.rebnconv1 = REBNCONV(out_ch, mid_ch, dirate=1)
        for i in range(2, height):
            self.add_module(f"pool{i - 1}", _pool())
            self.add_module(f"rebnconv{i}", REBNCONV(mid_ch, mid_ch, dirate=1))
        self.add_module(f"rebnconv{height}", REBNCONV(mid_ch, mid_ch, dirate=2))
        for i in range(height - 1, 1, -1):
            self.add_module(f"rebnconv{i}d", REBNCONV(mid_ch * 2, mid_ch, dirate=1))
        self.rebnconv1d = REBNCONV(mid_ch * 2, out_ch, dirate=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        L = self.height
        hxin = self.rebnconvin(x)
        enc = [self.rebnconv1(hxin)]  # enc[i-1] = output of rebnconv{i}
        for i in range(2, L):
            pooled = getattr(self, f"pool{i - 1}")(enc[-1])
            enc.append(getattr(self, f"rebnconv{i}")(pooled))
        hx = getattr(self, f"rebnconv{L}")(enc[-1])  # bottom, same resolution as rebnconv{L-1}
        hx = getattr(self, f"rebnconv{L - 1}d")(torch.cat((hx, enc[L - 2]), 1))
        for i in range(L - 2, 0, -1):
            up = upsample_like(hx, enc[i - 1])
            hx = getattr(self, f"rebnconv{i}d")(torch.cat((up, enc[i - 1]), 1))
        return hx + hxin


class RSU7(RSU):
    def __init__(self, in_ch: int = 3, mid_ch: int = 12, out_ch: int = 3) -> None:
        super().__init__(7, in_ch, mid_ch, out_ch)


class RSU6(RSU):
    def __init__(self, in_ch: int = 3, mid_ch: int = 12, out_ch: int = 3) -> None:
        super().__init__(6, in_ch, mid_ch, out_ch)


class RSU5(RSU):
    def __init__(self, in_ch: int = 3, mid_ch: int = 12, out_ch: int = 3) -> None:
        super().__init__(5, in_ch, mid_ch, out_ch)


class RSU4(RSU):
    def __init__(self, in_ch: int = 3, mid_ch: int = 12, out_ch: int = 3) -> None:
        super().__init__(4, in_ch, mid_ch, out_ch)


class RSU4F(nn.Module):
    """RSU-4F: the dilated, pooling-free residual U-block used at the lowest resolutions."""

    checkpoint_unit = True  # model.activation_checkpointing recomputes the whole block

    def __init__(self, in_ch: int = 3, mid_ch: int = 12, out_ch: int = 3) -> None:
        super().__init__()
        self.rebnconvin = REBNCONV(in_ch, out_ch, dirate=1)
        self.rebnconv1 = REBNCONV(out_ch, mid_ch, dirate=1)
        self.rebnconv2 = REBNCONV(mid_ch, mid_ch, dirate=2)
        self.rebnconv3 = REBNCONV(mid_ch, mid_ch, dirate=4)
        self.rebnconv4 = REBNCONV(mid_ch, mid_ch, dirate=8)
        self.rebnconv3d = REBNCONV(mid_ch * 2, mid_ch, dirate=4)
        self.rebnconv2d = REBNCONV(mid_ch * 2, mid_ch, dirate=2)
        self.rebnconv1d = REBNCONV(mid_ch * 2, out_ch, dirate=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hxin = self.rebnconvin(x)
        hx1 = self.rebnconv1(hxin)
        hx2 = self.rebnconv2(hx1)
        hx3 = self.rebnconv3(hx2)
        hx4 = self.rebnconv4(hx3)
        hx3d = self.rebnconv3d(torch.cat((hx4, hx3), 1))
        hx2d = self.rebnconv2d(torch.cat((hx3d, hx2), 1))
        hx1d = self.rebnconv1d(torch.cat((hx2d, hx1), 1))
        return hx1d + hxin
