"""Image grids for logging: one row per sample, columns input / ground truth / prediction."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.utils import make_grid

from salseg.models.card import Preprocessing as ModelSpec


def denormalize(image: torch.Tensor, spec: ModelSpec) -> torch.Tensor:
    """Undo the mean/std normalisation and min-max stretch each image to [0, 1] for display."""
    mean = torch.tensor(spec.mean, device=image.device).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, device=image.device).view(1, -1, 1, 1)
    x = image.float() * std[:, : image.shape[1]] + mean[:, : image.shape[1]]
    lo = x.amin(dim=(1, 2, 3), keepdim=True)
    hi = x.amax(dim=(1, 2, 3), keepdim=True)
    return (x - lo) / (hi - lo).clamp_min(1e-8)


def prediction_grid(image: torch.Tensor, mask: torch.Tensor, prob: torch.Tensor, spec: ModelSpec,
                    max_items: int = 4) -> torch.Tensor:
    """A ``(3, H, W)`` grid in [0, 1]: rows = samples, columns = input, GT, prediction."""
    n = min(max_items, image.shape[0])
    size = mask.shape[-2:]
    img = denormalize(image[:n], spec)
    if img.shape[1] == 1:
        img = img.expand(-1, 3, -1, -1)
    if img.shape[-2:] != size:
        img = F.interpolate(img, size=size, mode="bilinear", align_corners=False)
    gt = mask[:n].float().expand(-1, 3, -1, -1)
    pr = prob[:n].float()
    if pr.shape[-2:] != size:
        pr = F.interpolate(pr, size=size, mode="bilinear", align_corners=False)
    pr = pr.expand(-1, 3, -1, -1)
    tiles = torch.stack([img, gt, pr], dim=1).flatten(0, 1).cpu().clamp(0, 1)
    return make_grid(tiles, nrow=3, padding=2, pad_value=1.0)
