"""Per-model preprocessing specification: input size, normalisation and which output is the prediction.

A model's preprocessing belongs to the model, so that training, evaluation and prediction can
never disagree about it.  The defaults reproduce the official inference scripts:

* U2-Net / U2-NetP (``u2net_test.py``, OFFICIAL_NOTES §2.2-2.3): resize to 320x320 (aspect
  ratio not kept), image divided by its own maximum, then ImageNet mean/std; the prediction
  is the fused map (output index 0).
* IS-Net (``Inference.py``, OFFICIAL_NOTES §3.4, §3.6): resize to 1024x1024 bilinear, ``/255``,
  then mean 0.5, std 1.0; the prediction is side 1 (output index 0 of the side list).
* IS-Net GT encoder: input is the mask itself in [0, 1], no normalisation.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelSpec:
    """What a model expects as input and which of its outputs is the prediction."""

    name: str
    input_size: tuple[int, int]  # (height, width) used for training/inference
    scale: str  # "max": divide by the image's own maximum; "255": divide by 255
    mean: tuple[float, ...] = field(default=IMAGENET_MEAN)
    std: tuple[float, ...] = field(default=IMAGENET_STD)
    in_channels: int = 3

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        """Normalise a float image batch ``(B, C, H, W)`` holding values in [0, 255].

        ``scale == "max"`` divides every image by its own maximum (official U2-Net
        ``ToTensorLab(flag=0)``; an all-zero image is left at zero), ``"255"`` divides by 255.
        Then ``(x - mean) / std`` per channel.
        """
        if image.ndim != 4:
            raise ValueError(f"expected a (B, C, H, W) batch, got shape {tuple(image.shape)}")
        x = image.float()
        if self.scale == "max":
            peak = x.amax(dim=(1, 2, 3), keepdim=True)
            x = torch.where(peak > 0, x / peak.clamp_min(1e-12), x)
        elif self.scale == "255":
            x = x / 255.0
        else:
            raise ValueError(f"unknown scale mode {self.scale!r} (expected 'max' or '255')")
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std


SPECS: dict[str, ModelSpec] = {
    "u2net": ModelSpec("u2net", (320, 320), "max"),
    "u2netp": ModelSpec("u2netp", (320, 320), "max"),
    "isnet": ModelSpec("isnet", (1024, 1024), "255", (0.5, 0.5, 0.5), (1.0, 1.0, 1.0)),
    "isnet_gt_encoder": ModelSpec("isnet_gt_encoder", (1024, 1024), "255", (0.0,), (1.0,), 1),
}


def get_spec(name: str) -> ModelSpec:
    try:
        return SPECS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; expected one of {sorted(SPECS)}") from None
