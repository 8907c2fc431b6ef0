"""Map-style dataset of image/mask pairs and the batch collation.

Sample / batch contract (stable; used by training and evaluation):

* training sample: ``{"image": float (3, h, w) normalised, "mask": float (1, h, w) in [0, 1],
  "path": str}``.
* evaluation sample (``with_gt=True``): the same (``train=False``: the image prepared by the
  model card's :class:`~salseg.models.preprocess.Preprocessor` from the original file, never
  from the resize cache, exactly as ``salseg-predict`` prepares it) plus ``"gt"``: the original-resolution mask
  ``(1, H0, W0)`` in [0, 1], ``"size"``: ``(H0, W0)``, ``"image_path"``, ``"mask_path"``,
  ``"name"`` (the stem, with ``__hflip`` for virtual flips).
* ``mask_only=True`` (IS-Net phase 1, GT encoder): ``"image"`` is the transformed mask
  ``(1, h, w)`` in [0, 1] (the GT encoder's input; the GT encoder's preprocessing has
  mean 0, std 1), identical to ``"mask"``.

:func:`collate_seg` stacks tensors and keeps ``gt`` / paths as lists (``size`` as a
``LongTensor (B, 2)``).
"""
from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from salseg.data.io import image_is_gray, load_image, mask_to_unit, read_mask, read_mask_levels
from salseg.data.sources import Pair
from salseg.data.transforms import Recipe, SegTransform


class SegDataset(Dataset):
    """Image/mask pairs -> transformed samples following a recipe (see module docstring)."""

    def __init__(
        self,
        pairs: Sequence[Pair],
        recipe: Recipe,
        train: bool,
        with_gt: bool | None = None,
        mask_only: bool = False,
        alpha: str = "drop",
        cache: Any | None = None,
        seed: int | None = None,
    ) -> None:
        self.pairs = list(pairs)
        missing = [p.image for p in self.pairs if p.mask is None]
        if missing:
            raise ValueError(f"{len(missing)} image(s) have no mask (first: {missing[0]}); "
                             "training and evaluation need masks")
        self.recipe = recipe
        self.train = train
        self.with_gt = (not train) if with_gt is None else with_gt
        self.mask_only = mask_only
        self.alpha = alpha
        self.cache = cache
        self.transform = SegTransform(recipe, train, seed)
        # evaluation images: the model card's one preprocessing implementation, as salseg-predict
        # and salseg-eval model mode (same resize, same normalisation, same grayscale rule)
        self.preprocessor = None
        if not train and not mask_only:
            from salseg.models.preprocess import Preprocessor

            self.preprocessor = Preprocessor(recipe.spec, input_size=recipe.input_size)

    def __len__(self) -> int:
        return len(self.pairs)

    def reseed(self, seed: int) -> None:
        """Reseed the augmentation random streams (called per DataLoader worker)."""
        self.transform.set_random_seed(seed)

    def _load(self, pair: Pair) -> tuple[np.ndarray, np.ndarray, bool]:
        """Image uint8 (H, W, 3), mask (uint8 levels or float32 [0, 1]), cached if enabled, and
        whether the image was single-channel (its normalisation follows the gray rule)."""
        size = self.recipe.size if self.train else self.recipe.input_size
        if self.cache is not None and self.preprocessor is None:
            image, mask = self.cache.get(pair, size)
            return image, mask, (not self.mask_only) and image_is_gray(pair.image)
        assert pair.mask is not None
        loaded = load_image(pair.image, alpha=self.alpha)
        return loaded.array, read_mask_levels(pair.mask), loaded.gray

    def __getitem__(self, index: int) -> dict[str, Any]:
        pair = self.pairs[index]
        image, mask, gray = self._load(pair)
        if pair.hflip:
            image, mask = image[:, ::-1], mask[:, ::-1]
        if self.mask_only:
            image = np.repeat((mask_to_unit(mask) * 255.0)[..., None], 3, axis=2)
        if self.preprocessor is not None:
            out = {"image": self.preprocessor(np.ascontiguousarray(image), gray),
                   "mask": self.transform.eval_mask(np.ascontiguousarray(mask))}
        else:
            out = self.transform(np.ascontiguousarray(image), np.ascontiguousarray(mask),
                                 gray=gray and not self.mask_only)
        sample: dict[str, Any] = {"image": out["image"], "mask": out["mask"], "path": pair.image}
        if self.mask_only:
            sample["image"] = out["mask"].clone()
        if self.with_gt:
            assert pair.mask is not None
            cached = self.cache is not None and self.preprocessor is None
            gt = read_mask(pair.mask) if cached else mask_to_unit(mask)
            if pair.hflip and cached:
                gt = gt[:, ::-1]
            gt_t = torch.from_numpy(np.ascontiguousarray(gt, dtype=np.float32)).unsqueeze(0)
            sample.update(
                gt=gt_t,
                size=(int(gt_t.shape[1]), int(gt_t.shape[2])),
                image_path=pair.image,
                mask_path=pair.mask,
                name=pair.stem,
            )
        return sample


_LIST_KEYS = ("gt", "path", "image_path", "mask_path", "name")


def collate_seg(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack ``image``/``mask``; keep ``gt`` and paths as lists; ``size`` as LongTensor (B, 2)."""
    out: dict[str, Any] = {
        "image": torch.stack([b["image"] for b in batch]),
        "mask": torch.stack([b["mask"] for b in batch]),
    }
    for k in _LIST_KEYS:
        if k in batch[0]:
            out[k] = [b[k] for b in batch]
    if "size" in batch[0]:
        out["size"] = torch.tensor([b["size"] for b in batch], dtype=torch.long)
    return out


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed numpy, random and the dataset's augmentations.

    The seed is ``torch.initial_seed()`` of the worker (base seed + worker id; PyTorch draws a
    new base seed every epoch from the main process generator, so runs seeded with
    ``lightning.seed_everything`` are reproducible and epochs differ).
    """
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    info = torch.utils.data.get_worker_info()
    if info is not None:
        ds = info.dataset
        while hasattr(ds, "dataset") and not hasattr(ds, "reseed"):  # Subset wrappers
            ds = ds.dataset
        if hasattr(ds, "reseed"):
            ds.reseed(seed)
        elif hasattr(ds, "datasets"):  # ConcatDataset
            for d in ds.datasets:
                if hasattr(d, "reseed"):
                    d.reseed(seed)
