"""Device-side augmentation (``data.gpu_aug=true``): the paper recipes run on whole batches.

With ``gpu_aug`` the training DataLoader only decodes (or reads the uint8 resize cache) and
ships **uint8** images and masks; the batch is moved to the device once (4x fewer bytes than
float32) and :class:`DeviceAugment` then resizes, flips, crops and normalises it there, in
batch.  It follows the same :class:`~salseg.data.transforms.Recipe` as the CPU pipeline
(:class:`~salseg.data.transforms.SegTransform`):

* resize to ``recipe.size`` ignoring the aspect ratio: bilinear half-pixel without
  anti-aliasing for images (``F.interpolate(..., antialias=False)``, equal to cv2's float
  bilinear), ``nearest-exact`` (pixel centres, = ``cv2.INTER_NEAREST_EXACT``) or bilinear for
  masks; ``truncate_uint8`` floors the resized values like the DIS cache; inputs that already
  have the size (the cache) pass unchanged;
* flip (vertical for ``u2net_paper``, horizontal for ``isnet_paper``) with probability
  ``flip_p`` per sample, then a crop with offsets drawn uniformly from ``0 .. H - h - 1``
  (``crop_offsets: official``) or ``0 .. H - h`` (``uniform``) per sample;
* masks ``/255`` then ``label / max(label)`` when ``mask_norm: max``; images normalised by
  the model card's :class:`~salseg.models.card.Preprocessing` (own-max or ``/255``, mean,
  std), the same arithmetic as :func:`~salseg.data.transforms.normalize_hwc`; the batch key
  ``is_gray`` (one flag per sample: decoded from a single channel) selects the card's
  grayscale rule (``Preprocessing.gray``), as on the CPU.

Draws (flip, offsets) come from a ``torch.Generator`` on the CPU seeded with
``(seed, rank)``: the same distribution as the CPU recipe, not the same stream.  For a given
draw the values equal the CPU pipeline's within float rounding (tested within 1/255 on the
CPU device).  The ``strong`` recipe (albumentations' affine and colour ops) has no device
version: ``gpu_aug`` with it is an error.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from salseg.data.datasets import SegDataset
from salseg.data.transforms import Recipe

MODES = {"bilinear": "bilinear", "nearest": "nearest-exact", "bicubic": "bicubic", "area": "area"}


@dataclass(frozen=True)
class Draw:
    """The random choices for one batch: flip per sample and crop offsets per sample."""

    flip: torch.Tensor  # bool (B,)
    top: torch.Tensor  # long (B,)
    left: torch.Tensor  # long (B,)


def check_recipe(recipe: Recipe) -> None:
    if recipe.strong:
        raise ValueError(f"data.gpu_aug=true does not support the '{recipe.name}' recipe's "
                         "strong augmentations (aug.strong); use the CPU pipeline "
                         "(data.gpu_aug=false) or aug.strong=null")
    if recipe.ops:
        raise ValueError(f"data.gpu_aug=true does not support the '{recipe.name}' recipe's "
                         f"ops {list(recipe.ops)} (aug.ops); use the CPU pipeline "
                         "(data.gpu_aug=false) or aug.ops=[]")


def _resize(x: torch.Tensor, size: tuple[int, int], interpolation: str, truncate: bool
            ) -> torch.Tensor:
    """Float (B, C, H, W) in the 0..255 range -> ``size``; floors when ``truncate``."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    mode = MODES[interpolation]
    kw = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    out = F.interpolate(x, size=size, mode=mode, **kw)
    if truncate and mode != "nearest-exact":
        out = torch.floor(out)
    return out


class DeviceAugment:
    """Apply a recipe's training augmentation to a uint8 batch on its device."""

    def __init__(self, recipe: Recipe, seed: int = 0, rank: int = 0) -> None:
        check_recipe(recipe)
        self.recipe = recipe
        self.spec = recipe.spec
        self.generator = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(rank))

    # ------------------------------------------------------------------ draws
    def draw(self, batch_size: int) -> Draw:
        r = self.recipe
        g = self.generator
        flip = torch.rand(batch_size, generator=g) < r.flip_p if r.flip != "none" else \
            torch.zeros(batch_size, dtype=torch.bool)
        if r.crop is None:
            zero = torch.zeros(batch_size, dtype=torch.long)
            return Draw(flip, zero, zero.clone())
        extra = 0 if r.crop_offsets == "official" else 1
        hi_t = max(r.size[0] - r.crop[0] + extra, 1)
        hi_l = max(r.size[1] - r.crop[1] + extra, 1)
        top = torch.randint(0, hi_t, (batch_size,), generator=g)
        left = torch.randint(0, hi_l, (batch_size,), generator=g)
        return Draw(flip, top, left)

    # ------------------------------------------------------------------ apply
    def __call__(self, images: torch.Tensor | list[torch.Tensor],
                 masks: torch.Tensor | list[torch.Tensor], draw: Draw | None = None,
                 is_gray: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images ``(B, 3, H, W)`` and masks ``(B, 1, H, W)`` (or lists of differently
        sized ``(C, H, W)`` samples) -> normalised float32 images and masks in [0, 1]."""
        r = self.recipe
        img = self._resize_all(images, r.image_interpolation)
        msk = self._resize_all(masks, r.mask_interpolation)
        draw = draw or self.draw(img.shape[0])
        flip = draw.flip.to(img.device)
        if r.flip != "none" and bool(draw.flip.any()):
            dim = -2 if r.flip == "vertical" else -1
            sel = flip.view(-1, 1, 1, 1)
            img = torch.where(sel, img.flip(dim), img)
            msk = torch.where(sel, msk.flip(dim), msk)
        if r.crop is not None:
            img = _crop(img, draw.top, draw.left, r.crop)
            msk = _crop(msk, draw.top, draw.left, r.crop)
        msk = (msk * (1.0 / 255.0)).clamp_(0.0, 1.0)
        if r.mask_norm == "max":
            peak = msk.amax(dim=(1, 2, 3), keepdim=True)
            scale = torch.where((peak >= 1e-6) & (peak < 1.0), 1.0 / peak.clamp_min(1e-6),
                                torch.ones_like(peak))
            msk = msk * scale
        return self._normalize(img, is_gray), msk

    def _resize_all(self, x: torch.Tensor | list[torch.Tensor], interpolation: str
                    ) -> torch.Tensor:
        r = self.recipe
        if isinstance(x, torch.Tensor):
            return _resize(x.float(), r.size, interpolation, r.truncate_uint8)
        return torch.cat([_resize(t[None].float(), r.size, interpolation, r.truncate_uint8)
                          for t in x])

    def _normalize(self, x: torch.Tensor, is_gray: torch.Tensor | None) -> torch.Tensor:
        if is_gray is not None:  # the card's grayscale rule for single-channel images
            return self.spec.normalize(x, gray=[bool(g) for g in is_gray.cpu().tolist()])
        return self.spec.normalize(x)


def _crop(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, crop: tuple[int, int]
          ) -> torch.Tensor:
    """Per-sample crop ``x[b, :, top_b:top_b+h, left_b:left_b+w]`` as one gather-free stack."""
    h, w = crop
    if bool((top == top[0]).all()) and bool((left == left[0]).all()):
        t, lf = int(top[0]), int(left[0])
        return x[:, :, t:t + h, lf:lf + w]
    return torch.stack([x[i, :, int(t):int(t) + h, int(lf):int(lf) + w]
                        for i, (t, lf) in enumerate(zip(top.tolist(), left.tolist()))])


class RawSegDataset(SegDataset):
    """Training samples for ``gpu_aug``: uint8 ``image (3, H, W)`` and ``mask (1, H, W)`` at
    the cache's size or the file's native size (virtual flips applied), plus ``path``."""

    def __getitem__(self, index: int) -> dict[str, Any]:
        pair = self.pairs[index]
        image, mask, gray = self._load(pair)
        if pair.hflip:
            image, mask = image[:, ::-1], mask[:, ::-1]
        if mask.dtype != np.uint8:  # float [0, 1] (16-bit masks): back to 8-bit levels
            mask = np.rint(np.clip(mask, 0.0, 1.0) * 255.0).astype(np.uint8)
        if mask.ndim == 3:
            mask = mask[..., 0]
        img = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return {"image": img, "mask": torch.from_numpy(np.ascontiguousarray(mask))[None],
                "path": pair.image, "is_gray": bool(gray) and not self.mask_only}


def collate_raw(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack same-sized uint8 samples; keep lists when the sizes differ (native-size files)."""
    out: dict[str, Any] = {"path": [b["path"] for b in batch]}
    for key in ("image", "mask"):
        items = [b[key] for b in batch]
        same = all(t.shape == items[0].shape for t in items)
        out[key] = torch.stack(items) if same else items
    if "is_gray" in batch[0]:
        out["is_gray"] = torch.tensor([bool(b["is_gray"]) for b in batch])
    out["raw"] = True
    return out


def augment_batch(augment: DeviceAugment, batch: dict[str, Any], mask_only: bool = False
                  ) -> dict[str, Any]:
    """Replace a raw uint8 batch (already on its device) by the augmented float batch."""
    if not batch.get("raw"):
        return batch
    image, mask = augment(batch["image"], batch["mask"], is_gray=batch.get("is_gray"))
    out = {k: v for k, v in batch.items() if k not in ("image", "mask", "raw", "is_gray")}
    out["image"] = mask.clone() if mask_only else image
    out["mask"] = mask
    return out
