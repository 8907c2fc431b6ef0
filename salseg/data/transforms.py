"""Augmentation recipes (albumentations pipelines) and the evaluation transform.

A recipe is chosen with ``aug=<name>`` (``configs/aug/*.yaml``); every field can be overridden
(``aug.size=192 aug.crop=176``).  The papers' recipes are named in :data:`RECIPES`, so that
Python callers and a data config's ``default_aug`` can name them; a complete recipe (every field
of :class:`Recipe`, as ``configs/aug/base/recipe.yaml`` composes them) needs no entry, so a new
architecture's recipe is one ``configs/aug/<name>.yaml``.  Recipes:

``u2net_paper`` — official ``u2net_train.py`` / ``data_loader.py`` (OFFICIAL_NOTES §2.2):
  resize to 320x320 ignoring the aspect ratio, bilinear for the image **without anti-aliasing**
  (scikit-image 0.14 as pinned; computed in float, no quantisation), nearest for the mask
  (``order=0``; pixel-centre nearest = ``cv2.INTER_NEAREST_EXACT``); random **vertical** flip
  p=0.5 (``image[::-1]`` in the official ``RandomCrop``); random crop 288 with the official
  offsets ``randint(0, 320 - 288)`` = 0..31 (exclusive upper bound: the last position, 32, is
  never drawn; ``crop_offsets: uniform`` gives 0..32); label divided by its own maximum; image
  divided by its own maximum then ImageNet mean/std (the ``u2net`` card's preprocessing; a
  grayscale image uses the R statistics on all channels, as the official ``ToTensorLab``).
``isnet_paper`` — official DIS ``data_loader_cache.py`` (§3.4): resize to 1024x1024 bilinear
  without anti-aliasing for image **and** mask (soft masks stay soft), then the official uint8
  truncation (``floor``; ``truncate_uint8: false`` keeps the float values), random
  **horizontal** flip p=0.5, ``/255`` then mean 0.5, std 1.0 (the ``isnet`` card's preprocessing); masks
  ``/255``, not binarised.
``birefnet_paper`` — official BiRefNet ``dataset.py`` / ``image_proc.py`` (``preproc_methods``
  ``flip, enhance, rotate, pepper``): resize to 1024x1024 (``cv2.INTER_LINEAR``; here in float,
  the official resizes uint8), then the image/mask ops in the official order: horizontal flip
  p=0.5, ``rotate``, ``enhance``, ``pepper`` (see ``ops`` below); ImageNet mean/std after
  ``/255`` (the ``birefnet`` card's preprocessing); masks ``/255``, not binarised.
``strong`` — beyond the papers, for fine-tuning on small custom sets: resize (as u2net_paper
  but bilinear masks), horizontal flip, affine scale/rotate/translate (bilinear, reflected
  borders, masks transformed with the same parameters), colour jitter, blur, noise.

``ops`` (any recipe, applied after flip/crop/strong in the order given; names in :data:`OPS`):
  ``rotate`` — p=0.2 (``random() > 0.8``), an integer angle in [-15, 14] degrees
  (``np.random.randint(-15, 15)``), PIL ``rotate`` bicubic about the centre, no expansion,
  black fill, image and mask; ``enhance`` — PIL ``ImageEnhance`` brightness and contrast
  ``randint(5, 15) / 10``, colour ``randint(0, 20) / 10``, sharpness ``randint(0, 30) / 10``, in
  that order, every sample (image only); ``pepper`` — ``int(0.0015 * H * W)`` random pixels of
  the **mask** set to 0 or 1 (the official applies ``random_pepper`` to the label).  These ops
  run on 8-bit values as the official PIL images (the float image is rounded first).

Evaluation transform (all recipes): the mask is resized to ``eval_size`` (default ``size``; 320
for u2net_paper, as ``u2net_test.py``) with the recipe's interpolation/truncation; the image of
a validation sample is prepared by the model card's one preprocessing implementation
(:class:`salseg.models.preprocess.Preprocessor`, the one ``salseg-predict`` and ``salseg-eval``
model mode use) at ``eval_size``; the dataset carries the original-resolution mask and size
alongside.

Normalisation follows :meth:`salseg.models.card.Preprocessing.normalize` of the model card
named by ``normalization`` (with its grayscale rule; ``gray`` overrides the rule, e.g.
``aug.gray=per_channel``), so training, evaluation and prediction agree; :func:`normalize_hwc`
is its numpy twin for DataLoader workers (same arithmetic; a test checks they agree).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch

from salseg.models.card import GRAY_RULES, Preprocessing, get_card

INTERPOLATIONS = {
    "nearest": cv2.INTER_NEAREST_EXACT,  # pixel-centre nearest (skimage order=0, PIL NEAREST)
    "bilinear": cv2.INTER_LINEAR,  # half-pixel bilinear without anti-aliasing
    "area": cv2.INTER_AREA,
    "bicubic": cv2.INTER_CUBIC,
}
FLIPS = ("none", "horizontal", "vertical")


def _hw(v: Any) -> tuple[int, int] | None:
    if v is None:
        return None
    if isinstance(v, int | float):
        return int(v), int(v)
    v = list(v)
    if len(v) != 2:
        raise ValueError(f"size must be an int or [H, W], got {v!r}")
    return int(v[0]), int(v[1])


@dataclass(frozen=True)
class Recipe:
    """A fully resolved augmentation recipe (see the module docstring for each field)."""

    name: str = "u2net_paper"
    size: tuple[int, int] = (320, 320)
    crop: tuple[int, int] | None = (288, 288)
    crop_offsets: str = "official"  # official (exclusive upper bound) | uniform
    flip: str = "vertical"
    flip_p: float = 0.5
    image_interpolation: str = "bilinear"
    mask_interpolation: str = "nearest"
    truncate_uint8: bool = False
    mask_norm: str = "max"  # max: label / max(label) (official U2-Net) | none
    normalization: str = "u2net"  # model card whose preprocessing normalises
    eval_size: tuple[int, int] | None = None
    strong: dict = field(default_factory=dict)
    gray: str | None = None  # grayscale rule; None: the card's (see Preprocessing.gray)
    ops: tuple[str, ...] = ()  # extra training ops in order (names of OPS)

    @property
    def spec(self) -> Preprocessing:
        pre = get_card(self.normalization).preprocessing
        return pre if self.gray is None else replace(pre, gray=self.gray)

    @property
    def train_size(self) -> tuple[int, int]:
        """Spatial size of a training batch."""
        return self.crop or self.size

    @property
    def input_size(self) -> tuple[int, int]:
        """Spatial size of an evaluation batch."""
        return self.eval_size or self.size


_STRONG_DEFAULTS = {
    "scale": [0.75, 1.25], "rotate": 25, "translate": 0.1, "affine_p": 0.8,
    "brightness": 0.3, "contrast": 0.3, "saturation": 0.3, "hue": 0.05, "jitter_p": 0.8,
    "blur_p": 0.2, "noise_p": 0.2,
}

RECIPES: dict[str, Recipe] = {
    "u2net_paper": Recipe(),
    "isnet_paper": Recipe(
        name="isnet_paper", size=(1024, 1024), crop=None, crop_offsets="uniform",
        flip="horizontal", mask_interpolation="bilinear", truncate_uint8=True, mask_norm="none",
        normalization="isnet",
    ),
    "birefnet_paper": Recipe(
        name="birefnet_paper", size=(1024, 1024), crop=None, crop_offsets="uniform",
        flip="horizontal", mask_interpolation="bilinear", mask_norm="none",
        normalization="birefnet", ops=("rotate", "enhance", "pepper"),
    ),
    "strong": Recipe(
        name="strong", size=(320, 320), crop=None, crop_offsets="uniform", flip="horizontal",
        mask_interpolation="bilinear", mask_norm="none", normalization="u2net",
        strong=dict(_STRONG_DEFAULTS),
    ),
}


def build_recipe(cfg: Recipe | Mapping | str | None = None, default: str = "u2net_paper") -> Recipe:
    """Resolve an ``aug`` config (mapping with optional ``name``, a recipe name, or None)."""
    if isinstance(cfg, Recipe):
        return cfg
    if cfg is None:
        cfg = {}
    if isinstance(cfg, str):
        cfg = {"name": cfg}
    try:  # OmegaConf DictConfig -> plain dict
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            cfg = OmegaConf.to_container(cfg, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    cfg = {k: v for k, v in dict(cfg).items() if not str(k).startswith("_")}
    name = cfg.pop("name", None) or default
    known = {f.name for f in fields(Recipe)}
    if name in RECIPES:
        base = RECIPES[name]
    elif known - {"name"} <= set(cfg):  # a complete recipe (configs/aug/*.yaml): no entry needed
        base = Recipe(name=name)
    else:
        missing = sorted(known - {"name"} - set(cfg))
        raise ValueError(f"unknown augmentation recipe {name!r}; expected one of {list(RECIPES)}, "
                         f"or a complete recipe (missing fields: {missing})")
    unknown = set(cfg) - known
    if unknown:
        raise ValueError(f"unknown aug option(s) {sorted(unknown)} for recipe {name!r}; "
                         f"known: {sorted(known)}")
    for key in ("size", "crop", "eval_size"):
        if key in cfg:
            cfg[key] = _hw(cfg[key])
    if "ops" in cfg:
        cfg["ops"] = tuple(cfg["ops"] or ())
    if "strong" in cfg:  # {} / null: no strong ops; otherwise merged over the defaults
        given = cfg["strong"] or {}
        merged = dict(base.strong or _STRONG_DEFAULTS) if given else {}
        merged.update(given)
        cfg["strong"] = merged
    recipe = replace(base, **cfg)
    _validate(recipe)
    return recipe


def _validate(r: Recipe) -> None:
    if r.flip not in FLIPS:
        raise ValueError(f"aug.flip must be one of {FLIPS}, got {r.flip!r}")
    for key in ("image_interpolation", "mask_interpolation"):
        if getattr(r, key) not in INTERPOLATIONS:
            raise ValueError(f"aug.{key} must be one of {list(INTERPOLATIONS)}")
    unknown_ops = [o for o in r.ops if o not in OPS]
    if unknown_ops:
        raise ValueError(f"aug.ops {unknown_ops} unknown; expected names of {list(OPS)}")
    if r.crop_offsets not in ("official", "uniform"):
        raise ValueError("aug.crop_offsets must be 'official' or 'uniform'")
    if r.mask_norm not in ("max", "none"):
        raise ValueError("aug.mask_norm must be 'max' or 'none'")
    get_card(r.normalization)
    if r.gray is not None and r.gray not in GRAY_RULES:
        raise ValueError(f"aug.gray must be one of {GRAY_RULES} or null, got {r.gray!r}")
    if min(r.size) < 8:
        raise ValueError(f"aug.size {r.size} too small")
    if r.crop is not None and (r.crop[0] > r.size[0] or r.crop[1] > r.size[1]):
        ratio = 288 / 320
        hint = (round(r.size[0] * ratio), round(r.size[1] * ratio))
        raise ValueError(
            f"aug.crop={list(r.crop)} is larger than aug.size={list(r.size)}; set aug.crop too "
            f"(the paper ratio 288/320 gives {list(hint)}) or aug.crop=null"
        )


# --------------------------------------------------------------------------- transforms


def resize_image(image: np.ndarray, size: tuple[int, int], interpolation: str = "bilinear",
                 truncate: bool = False) -> np.ndarray:
    """Resize an image (any dtype) to ``size`` (H, W) as float32 in the input's value range.

    Bilinear is half-pixel (``align_corners=False``) without anti-aliasing, as the official
    ``F.upsample`` and scikit-image 0.14 ``resize``; ``truncate`` floors to integers like
    the official ``.type(torch.uint8)``.
    """
    h, w = size
    x = image.astype(np.float32, copy=False)
    if x.shape[:2] != (h, w):
        x = cv2.resize(x, (w, h), interpolation=INTERPOLATIONS[interpolation])
        if x.ndim == 2 and image.ndim == 3:
            x = x[..., None]
        if truncate:  # cv2's float bilinear equals torch's F.interpolate here: floor is exact
            np.floor(x, out=x)
    return x


def resize_mask(mask: np.ndarray, size: tuple[int, int], interpolation: str = "nearest",
                truncate: bool = False) -> np.ndarray:
    """Resize a mask to float32 [0, 1]; ``truncate`` floors ``mask * 255`` like the DIS cache.

    ``mask`` is float in [0, 1] or uint8 levels 0..255 (:func:`salseg.data.io.read_mask_levels`,
    resized without a full-resolution float copy).
    """
    h, w = size
    inv = np.float32(1.0 / 255.0)
    if mask.dtype == np.uint8:
        if mask.shape[:2] == (h, w):
            return mask.astype(np.float32) * inv
        if interpolation == "nearest":
            m = cv2.resize(mask, (w, h), interpolation=INTERPOLATIONS[interpolation])
            return m.astype(np.float32) * inv
        m = cv2.resize(mask.astype(np.float32), (w, h), interpolation=INTERPOLATIONS[interpolation])
        if truncate:
            np.floor(m, out=m)
        m *= inv
        return m
    if mask.shape[:2] == (h, w):
        return mask.astype(np.float32, copy=False)
    m = mask.astype(np.float32, copy=False)
    if truncate and interpolation != "nearest":
        # the official cache resizes the 0..255 label levels and floors to uint8: quantise to
        # 8-bit levels first (exact for 8-bit masks), resize, floor
        m255 = m * np.float32(255.0)
        np.rint(m255, out=m255)
        m255 = cv2.resize(m255, (w, h), interpolation=INTERPOLATIONS[interpolation])
        np.floor(m255, out=m255)
        m255 *= np.float32(1.0 / 255.0)
        return m255
    return cv2.resize(m, (w, h), interpolation=INTERPOLATIONS[interpolation])


class PaperResize(A.DualTransform):
    """Resize to a fixed (H, W) ignoring the aspect ratio; image float32 in its input range.

    An input that already has the target size (e.g. from the resize cache) passes unchanged.
    """

    def __init__(self, height: int, width: int, image_interpolation: str = "bilinear",
                 mask_interpolation: str = "nearest", truncate: bool = False, p: float = 1.0):
        super().__init__(p=p)
        self.height, self.width = int(height), int(width)
        self.image_interpolation = image_interpolation
        self.mask_interpolation = mask_interpolation
        self.truncate = truncate

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        return resize_image(img, (self.height, self.width), self.image_interpolation, self.truncate)

    def apply_to_mask(self, mask: np.ndarray, **params: Any) -> np.ndarray:
        return resize_mask(mask, (self.height, self.width), self.mask_interpolation, self.truncate)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("height", "width", "image_interpolation", "mask_interpolation", "truncate")


class ToUnitRange(A.ImageOnlyTransform):
    """Image values [0, 255] -> float32 [0, 1] (what albumentations' pixel transforms expect)."""

    def __init__(self, p: float = 1.0):
        super().__init__(p=p)

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        return img.astype(np.float32, copy=False) * np.float32(1.0 / 255.0)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ()


class PaperRandomCrop(A.DualTransform):
    """Random crop; ``offsets='official'`` draws ``randint(0, H - h)`` (upper bound excluded).

    The official ``RandomCrop`` (U2-Net ``data_loader.py``) uses ``np.random.randint(0, h -
    new_h)``: for 320 -> 288 the offsets are 0..31 and 32 is never drawn (and ``H == h`` would
    raise there; here it gives offset 0).  ``offsets='uniform'`` draws 0..H-h inclusive.
    """

    def __init__(self, height: int, width: int, offsets: str = "official", p: float = 1.0):
        super().__init__(p=p)
        self.height, self.width, self.offsets = int(height), int(width), offsets

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]
                                     ) -> dict[str, Any]:
        h, w = params["shape"][:2]
        extra = 0 if self.offsets == "official" else 1
        top = int(self.random_generator.integers(0, max(h - self.height + extra, 1)))
        left = int(self.random_generator.integers(0, max(w - self.width + extra, 1)))
        return {"top": top, "left": left}

    def apply(self, img: np.ndarray, top: int = 0, left: int = 0, **params: Any) -> np.ndarray:
        return img[top: top + self.height, left: left + self.width]

    def apply_to_mask(self, mask: np.ndarray, top: int = 0, left: int = 0, **params: Any
                      ) -> np.ndarray:
        return mask[top: top + self.height, left: left + self.width]

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("height", "width", "offsets")


def _strong_ops(s: Mapping[str, Any], mask_interp: str) -> list[A.BasicTransform]:
    lo, hi = s.get("scale", [0.75, 1.25])
    t = float(s.get("translate", 0.1))
    return [
        A.Affine(scale=(float(lo), float(hi)), rotate=(-float(s.get("rotate", 25)), float(s.get("rotate", 25))),
                 translate_percent=(-t, t), interpolation=cv2.INTER_LINEAR,
                 mask_interpolation=cv2.INTER_NEAREST if mask_interp == "nearest"
                 else INTERPOLATIONS[mask_interp], border_mode=cv2.BORDER_REFLECT_101,
                 p=float(s.get("affine_p", 0.8))),
        A.ColorJitter(brightness=s.get("brightness", 0.3), contrast=s.get("contrast", 0.3),
                      saturation=s.get("saturation", 0.3), hue=s.get("hue", 0.05),
                      p=float(s.get("jitter_p", 0.8))),
        A.GaussianBlur(blur_limit=(3, 7), p=float(s.get("blur_p", 0.2))),
        A.GaussNoise(std_range=(0.01, 0.04), p=float(s.get("noise_p", 0.2))),
    ]


def _to_u8(x: np.ndarray, unit: bool) -> np.ndarray:
    y = x * np.float32(255.0) if unit else x
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)


def _from_u8(x: np.ndarray, unit: bool, like: np.ndarray) -> np.ndarray:
    y = np.asarray(x).astype(np.float32)
    if y.ndim == 2 and like.ndim == 3:
        y = y[..., None]
    return y * np.float32(1.0 / 255.0) if unit else y


class RandomRotate(A.DualTransform):
    """BiRefNet ``random_rotate``: with probability ``prob`` an integer angle in
    ``[-limit, limit - 1]``, PIL bicubic rotation about the centre (black fill), image and mask
    (``unit``: the image is in [0, 1], else [0, 255]; masks are in [0, 1])."""

    def __init__(self, limit: int = 15, prob: float = 0.2, unit: bool = False, p: float = 1.0):
        super().__init__(p=p)
        self.limit, self.prob, self.unit = int(limit), float(prob), bool(unit)

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]
                                     ) -> dict[str, Any]:
        rotate = float(self.random_generator.random()) < self.prob
        angle = int(self.random_generator.integers(-self.limit, self.limit))
        return {"angle": angle if rotate else None}

    @staticmethod
    def _rotate(u8: np.ndarray, angle: int) -> np.ndarray:
        from PIL import Image

        img = Image.fromarray(u8[..., 0] if u8.ndim == 3 and u8.shape[2] == 1 else u8)
        return np.asarray(img.rotate(angle, Image.Resampling.BICUBIC))

    def apply(self, img: np.ndarray, angle: int | None = None, **params: Any) -> np.ndarray:
        if angle is None:
            return img
        return _from_u8(self._rotate(_to_u8(img, self.unit), angle), self.unit, img)

    def apply_to_mask(self, mask: np.ndarray, angle: int | None = None, **params: Any
                      ) -> np.ndarray:
        if angle is None:
            return mask
        return _from_u8(self._rotate(_to_u8(mask, True), angle), True, mask)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("limit", "prob", "unit")


class ColorEnhance(A.ImageOnlyTransform):
    """BiRefNet ``color_enhance``: PIL brightness, contrast (``randint(5, 15) / 10``), colour
    (``randint(0, 20) / 10``) and sharpness (``randint(0, 30) / 10``), in that order."""

    def __init__(self, unit: bool = False, p: float = 1.0):
        super().__init__(p=p)
        self.unit = bool(unit)

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]
                                     ) -> dict[str, Any]:
        g = self.random_generator
        return {"factors": (int(g.integers(5, 16)) / 10, int(g.integers(5, 16)) / 10,
                            int(g.integers(0, 21)) / 10, int(g.integers(0, 31)) / 10)}

    def apply(self, img: np.ndarray, factors: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0),
              **params: Any) -> np.ndarray:
        from PIL import Image, ImageEnhance

        u8 = _to_u8(img, self.unit)
        pil = Image.fromarray(u8[..., 0] if u8.shape[-1] == 1 else u8)
        for enhancer, f in zip((ImageEnhance.Brightness, ImageEnhance.Contrast,
                                ImageEnhance.Color, ImageEnhance.Sharpness), factors):
            pil = enhancer(pil).enhance(f)
        return _from_u8(np.asarray(pil), self.unit, img)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("unit",)


class MaskPepper(A.DualTransform):
    """BiRefNet ``random_pepper`` on the label: ``int(amount * H * W)`` random pixels of the
    mask set to 0 or 1 (the image is unchanged)."""

    def __init__(self, amount: float = 0.0015, p: float = 1.0):
        super().__init__(p=p)
        self.amount = float(amount)

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]
                                     ) -> dict[str, Any]:
        h, w = params["shape"][:2]
        n = int(self.amount * h * w)
        g = self.random_generator
        return {"rows": g.integers(0, h, n), "cols": g.integers(0, w, n),
                "values": g.integers(0, 2, n).astype(np.float32)}

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        return img

    def apply_to_mask(self, mask: np.ndarray, rows: Any = (), cols: Any = (), values: Any = (),
                      **params: Any) -> np.ndarray:
        out = np.array(mask, dtype=np.float32, copy=True)
        for r, c, v in zip(rows, cols, values):  # in order: a pixel drawn twice keeps the last
            out[r, c] = v
        return out

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("amount",)


#: the extra training ops a recipe may list in ``ops`` (built with ``unit``: image in [0, 1])
OPS: dict[str, Any] = {
    "rotate": lambda unit: RandomRotate(unit=unit),
    "enhance": lambda unit: ColorEnhance(unit=unit),
    "pepper": lambda unit: MaskPepper(),
}


def image_unit_range(recipe: Recipe, train: bool) -> bool:
    """Whether the pipeline's image output is in [0, 1] (else [0, 255])."""
    return bool(train and recipe.strong)


def build_pipeline(recipe: Recipe, train: bool, seed: int | None = None) -> A.Compose:
    """The albumentations pipeline of ``recipe`` (training or evaluation)."""
    size = recipe.size if train else recipe.input_size
    ops: list[A.BasicTransform] = [
        PaperResize(size[0], size[1], recipe.image_interpolation, recipe.mask_interpolation,
                    recipe.truncate_uint8),
    ]
    if image_unit_range(recipe, train):  # albumentations' pixel ops expect [0, 1] floats
        ops.append(ToUnitRange())
    if train:
        if recipe.flip == "vertical":
            ops.append(A.VerticalFlip(p=recipe.flip_p))
        elif recipe.flip == "horizontal":
            ops.append(A.HorizontalFlip(p=recipe.flip_p))
        if recipe.crop is not None:
            ops.append(PaperRandomCrop(recipe.crop[0], recipe.crop[1], recipe.crop_offsets))
        if recipe.strong:
            ops.extend(_strong_ops(recipe.strong, recipe.mask_interpolation))
        unit = image_unit_range(recipe, train)
        ops.extend(OPS[name](unit) for name in recipe.ops)
    return A.Compose(ops, seed=seed, strict=False)


class SegTransform:
    """Image/mask arrays -> normalised tensors, following a :class:`Recipe`.

    ``__call__(image uint8|float (H, W, 3) in [0, 255], mask float (H, W) in [0, 1] or None)``
    returns ``{"image": float32 (3, h, w) normalised, "mask": float32 (1, h, w) in [0, 1]}``.
    """

    def __init__(self, recipe: Recipe, train: bool, seed: int | None = None) -> None:
        self.recipe = recipe
        self.train = train
        self.pipeline = build_pipeline(recipe, train, seed)
        self.spec = recipe.spec
        self.value_max = 1.0 if image_unit_range(recipe, train) else 255.0

    def set_random_seed(self, seed: int | None) -> None:
        self.pipeline.set_random_seed(seed)

    def __call__(self, image: np.ndarray, mask: np.ndarray | None = None, gray: bool = False
                 ) -> dict[str, torch.Tensor]:
        if mask is None:
            out = self.pipeline(image=image)
            m = None
        else:
            out = self.pipeline(image=image, mask=mask)
            m = out["mask"]
        res = {"image": torch.from_numpy(normalize_hwc(out["image"], self.spec, self.value_max,
                                                       gray))}
        if m is not None:
            res["mask"] = self._mask_tensor(m)
        return res

    def eval_mask(self, mask: np.ndarray) -> torch.Tensor:
        """The evaluation transform of a mask alone: ``(1, h, w)`` at the recipe's input size
        (the image is prepared by the model card's preprocessing, see ``SegDataset``)."""
        r = self.recipe
        return self._mask_tensor(resize_mask(mask, r.input_size, r.mask_interpolation,
                                             r.truncate_uint8))

    def _mask_tensor(self, m: np.ndarray) -> torch.Tensor:
        m = np.clip(m, 0.0, 1.0)
        if self.recipe.mask_norm == "max":
            peak = float(m.max()) if m.size else 0.0
            if 1e-6 <= peak < 1.0:  # official ToTensorLab: label / max(label)
                m = m * np.float32(1.0 / peak)
        return torch.from_numpy(np.ascontiguousarray(m, dtype=np.float32)).unsqueeze(0)


def normalize_hwc(image: np.ndarray, spec: Preprocessing, value_max: float = 1.0,
                  gray: bool = False) -> np.ndarray:
    """``spec.normalize`` for one float ``(H, W, C)`` image -> ``(C, H, W)`` float32.

    ``value_max`` is the value of white (1 for [0, 1] images, 255 for [0, 255]); ``gray`` marks
    a single-channel image (``spec.gray`` rule).  The same arithmetic as
    :meth:`Preprocessing.normalize` (tested to agree), fused into one multiply-add
    per channel in numpy, so DataLoader workers neither pay torch's per-op overhead nor
    several passes over 1024x1024 images.
    """
    x = image if image.dtype == np.float32 else image.astype(np.float32)
    if spec.scale == "max":
        peak = float(x.max()) if x.size else 0.0
        denom = peak if peak > 0 else 1.0
    elif spec.scale == "255":
        denom = float(value_max)
    else:
        raise ValueError(f"unknown scale mode {spec.scale!r}")
    c = x.shape[2]
    mean, std = spec.stats(c, gray)
    out = np.empty((c, x.shape[0], x.shape[1]), np.float32)
    for k in range(c):  # (x / denom - mean) / std  ==  x * a - b
        np.multiply(x[..., k], np.float32(1.0 / (denom * std[k])), out=out[k])
        out[k] -= np.float32(mean[k] / std[k])
    return out


def official_crop_offsets(size: int, crop: int) -> range:
    """All offsets the official ``RandomCrop`` can draw (``randint(0, size - crop)``)."""
    return range(0, max(size - crop, 1))


__all__ = [
    "OPS", "RECIPES", "Recipe", "SegTransform", "build_pipeline", "build_recipe", "resize_image",
    "resize_mask", "PaperResize", "PaperRandomCrop", "ToUnitRange", "official_crop_offsets",
    "normalize_hwc",
]
