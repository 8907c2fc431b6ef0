"""Reading prediction and ground-truth maps for evaluation as raw 8-bit arrays (the reference tools
score the stored values: a GT stored as 0/1 stays 0/1, see docs/metrics.md "Reading maps").

* 8-bit grayscale (``L``) is used as stored; ``1`` (bilevel) becomes 0/255;
* colour / palette / alpha images are converted with Pillow's ``L`` (ITU-R 601 luma, as
  ``cv2.imread(..., IMREAD_GRAYSCALE)`` does); a binary mask stored as RGB reads unchanged;
* 16-bit (``I;16``, ``I``) maps are scaled to 8 bits with ``round(v / 257)``; float (``F``) maps in
  [0, 1] are scaled by 255, others clipped to [0, 255]; a float map holding NaN is refused
  (naming the file), as no score of it would mean anything;
* EXIF orientation is applied, to predictions and GT alike: the same policy as for images and
  training masks (:mod:`salseg.data.io`), so every map is scored as it is displayed;
* an animated or multi-page file (GIF, APNG, TIFF, WebP) is read as its first frame, with a
  warning naming it.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from salseg.data.io import IMAGE_EXTENSIONS
from salseg.evaluation.errors import EvaluationError

_EXIF_ORIENTATION_TAG = 0x0112
log = logging.getLogger(__name__)


def _oriented(img: Image.Image) -> Image.Image:
    """``img`` turned as its EXIF orientation tag says (malformed EXIF: as stored)."""
    try:
        orientation = img.getexif().get(_EXIF_ORIENTATION_TAG, 1)
    except Exception:  # noqa: BLE001 - malformed EXIF is not fatal: the pixels are fine
        return img
    if orientation in (None, 1):
        return img
    return ImageOps.exif_transpose(img) or img


def list_maps(folder: str | Path) -> dict[str, Path]:
    """Image files of a folder by file stem (non-recursive); duplicate stems are an error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EvaluationError(f"{folder}: not a folder")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
            if path.stem in found:
                raise EvaluationError(
                    f"{folder}: two maps named {path.stem!r} ({found[path.stem].name}, {path.name})"
                )
            found[path.stem] = path
    return found


def read_map_u8(path: str | Path) -> np.ndarray:
    """A prediction or GT map as a (H, W) uint8 array of its stored values."""
    path = Path(path)
    try:
        with Image.open(path) as img0:
            img0.load()
            frames = getattr(img0, "n_frames", 1) if img0.format != "MPO" else 1
            if frames > 1:  # MPO: a camera JPEG whose frame 0 is the photo itself
                log.warning("%s: %d frames (animated or multi-page %s); frame 0 is used", path,
                            frames, img0.format)
            img = _oriented(img0)
            mode = img.mode
            if mode == "L":
                arr = np.array(img, dtype=np.uint8)
            elif mode == "1":
                arr = np.array(img, dtype=np.uint8) * 255
            elif mode in ("I;16", "I;16B", "I;16L", "I"):
                a = np.asarray(img).astype(np.float64)
                arr = a if a.max() <= 255 and mode == "I" else np.round(a / 257)
                arr = np.clip(arr, 0, 255).astype(np.uint8)
            elif mode == "F":
                a = np.asarray(img, dtype=np.float64)
                if np.isnan(a).any():
                    raise EvaluationError(f"{path}: float map holds {int(np.isnan(a).sum())} "
                                          "NaN value(s); refusing to score it")
                a = a * 255 if a.max() <= 1 else a
                arr = np.clip(np.round(a), 0, 255).astype(np.uint8)
            else:
                arr = np.array(img.convert("L"), dtype=np.uint8)
    except FileNotFoundError as err:
        raise EvaluationError(f"{path}: file not found") from err
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise EvaluationError(f"{path}: unreadable image ({err})") from err
    if arr.ndim != 2 or arr.size == 0:
        raise EvaluationError(f"{path}: expected a single-channel map, got shape {arr.shape}")
    return arr
