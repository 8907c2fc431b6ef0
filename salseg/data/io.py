"""Decoding of images and masks into the arrays the rest of salseg works with.

``read_image(path) -> uint8 (H, W, 3) RGB`` and ``read_mask(path) -> float32 (H, W) in [0, 1]``
are the single entry points used by training, evaluation, the data check and prediction.
``load_image`` / ``load_mask`` return the same arrays plus the list of conversions applied
(``notes``), which the data check reports.

Decisions (see docs/data.md, "Decoding"):

Images
* EXIF orientation is applied (``ImageOps.exif_transpose``); the official loaders
  (``skimage.io.imread``) ignored it, so a rotated phone photo was fed sideways.
* Grayscale (``L``, ``1``, ``LA``, 16-bit and float single-channel) is replicated to three
  channels (official DIS cache) and marked ``LoadedImage.gray``: normalisation follows the
  model's grayscale rule (the official U2-Net ``ToTensorLab`` normalises a single-channel image
  with the R statistics on all three channels, which differs from per-channel statistics; see
  :class:`salseg.models.card.Preprocessing`).
* Alpha (``RGBA``, ``LA``, palette with transparency) is **dropped** by default, which is what
  the official U2-Net ``ToTensorLab`` does (it keeps channels 0..2).  ``alpha="black"`` or
  ``"white"`` composites over that colour instead.
* CMYK, YCbCr, LAB, HSV and palette images are converted to RGB by Pillow.
* 16-bit images: single-channel 16-bit (``I;16``) is scaled with ``round(v / 257)``; Pillow
  itself reduces 16-bit RGB PNG/TIFF to 8 bits by keeping the high byte.  32-bit integer
  (``I``) data whose maximum fits 8 bits is kept, else treated as 16-bit; float (``F``) data
  in [0, 1] is multiplied by 255, otherwise clipped to [0, 255].
* Animated or multi-page files (GIF, APNG, TIFF, WebP) are read as their first frame, with a
  warning naming the file and a note (camera MPO JPEGs, whose frame 0 is the photo, are quiet).
* Zero-byte, missing, unreadable (unknown format / corrupt header) and truncated files raise
  :class:`~salseg.data.errors.DataError` naming the file.  Truncated data is never padded
  (Pillow's ``LOAD_TRUNCATED_IMAGES`` stays off).
* Speed: the header is always read by Pillow; the pixels of the common cases (8-bit RGB JPEG
  or PNG images, 8-bit grayscale PNG masks) are decoded by OpenCV, which returns NumPy arrays
  without Pillow's RGBX->RGB repacking (about 3x faster for a 2000x1500 JPEG) and gives the
  same pixels (same libjpeg-turbo decoding; tested).  When OpenCV cannot decode a file
  (truncated, corrupt), Pillow decodes it and reports the error.  ``fast=False`` forces Pillow.

Masks
* 8-bit masks are divided by 255 (DIS convention); soft values are kept as soft targets.
* A mask whose values are all in {0, 1} (stored as 0/1 rather than 0/255) is read as a binary
  {0, 1} mask, and a note says so (the DIS evaluation does the same for a max of 1).
* Multi-channel masks use **channel 0** (what both official loaders do); a note says so and
  whether the channels differed.  Exception: when the colour channels are constant and only
  the alpha channel varies (a mask stored as transparency), the alpha channel is used.
* Palette masks are converted to RGB first, then channel 0 (what ``skimage.io.imread`` gives).
* 16-bit masks are divided by 65535; float masks in [0, 1] are kept, otherwise divided by 255.
* EXIF orientation is applied to masks too (a no-op for masks without EXIF data), so that a
  mask saved by a camera-aware tool lines up with its oriented image.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from salseg.data.errors import DataError

log = logging.getLogger(__name__)

ALPHA_MODES = ("drop", "black", "white")
# the one list of image file extensions salseg accepts (data sources, evaluation folders,
# salseg-predict inputs)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm",
                    ".pgm", ".pbm", ".jfif", ".jpe")
_EXIF_ORIENTATION_TAG = 0x0112


@dataclass
class LoadedImage:
    """A decoded RGB image with what was done to it."""

    array: np.ndarray | None  # uint8 (H, W, 3); None when decoded with pixels=False
    mode: str  # Pillow mode of the file
    raw_size: tuple[int, int]  # (H, W) as stored, before EXIF orientation
    exif_transposed: bool = False
    notes: list[str] = field(default_factory=list)
    size: tuple[int, int] | None = None  # (H, W) after EXIF orientation

    @property
    def hw(self) -> tuple[int, int]:
        """(H, W) after EXIF orientation."""
        if self.array is not None:
            return (int(self.array.shape[0]), int(self.array.shape[1]))
        assert self.size is not None
        return self.size

    @property
    def gray(self) -> bool:
        """Decoded from a single colour channel (see :func:`is_gray_mode`)."""
        return is_gray_mode(self.mode)


def is_gray_mode(mode: str) -> bool:
    """Whether a Pillow mode holds one colour channel (``1``, ``L``, ``LA``, ``I*``, ``F``):
    the images the official U2-Net loader sees as single-channel."""
    return mode in ("1", "L", "LA", "La", "F") or mode.startswith("I")


@dataclass
class LoadedMask:
    """A decoded mask in [0, 1] with what was done to it."""

    array: np.ndarray  # float32 (H, W) in [0, 1]
    mode: str
    raw_size: tuple[int, int]
    exif_transposed: bool = False
    notes: list[str] = field(default_factory=list)
    binary_01: bool = False  # stored as 0/1 instead of 0/255

    @property
    def soft_pixels(self) -> int:
        """Number of pixels strictly between 0 and 1."""
        a = self.array
        return int(np.count_nonzero((a > 0) & (a < 1)))


def _open(path: str | Path) -> Image.Image:
    """Open ``path`` with Pillow, turning every failure into a :class:`DataError`."""
    p = Path(path)
    try:
        size = os.path.getsize(p)
    except FileNotFoundError:
        raise DataError("file does not exist", p) from None
    except OSError as e:
        raise DataError(f"cannot access file ({e.strerror or e})", p) from None
    if p.is_dir():
        raise DataError("is a directory, expected an image file", p)
    if size == 0:
        raise DataError("file is empty (0 bytes)", p)
    try:
        return Image.open(p)
    except UnidentifiedImageError:
        raise DataError("not a readable image (unknown format or corrupt header)", p) from None
    except Image.DecompressionBombError as e:
        raise DataError(f"image too large to decode safely ({e})", p) from None
    except PermissionError:
        raise DataError("cannot open file: permission denied", p) from None
    except Exception as e:  # OSError, SyntaxError, struct.error ... from format plugins
        raise DataError(f"cannot open image ({type(e).__name__}: {e})", p) from None


def _frames_note(img: Image.Image, path: str | Path) -> list[str]:
    """A warning and a note when ``img`` has several frames: frame 0 is what is decoded."""
    if img.format == "MPO":  # a camera JPEG with extra pictures: frame 0 is the photo itself
        return []
    try:
        frames = int(getattr(img, "n_frames", 1))
    except Exception:  # noqa: BLE001 - a damaged later frame: frame 0 is still read (or reported)
        frames = 1
    if frames <= 1:
        return []
    note = f"{frames} frames (animated or multi-page {img.format}): frame 0 used"
    log.warning("%s: %s", path, note)
    return [note]


def _is_16bit(img: Image.Image) -> bool:
    """Whether the stored samples are 16-bit (Pillow may already map them to 8-bit RGB)."""
    if img.mode.startswith("I;16"):
        return True
    for tile in getattr(img, "tile", None) or []:
        args = tile[3] if len(tile) > 3 else None
        raw = args[0] if isinstance(args, tuple) and args else args
        if isinstance(raw, str) and ";16" in raw:
            return True
    return False


def _decode(img: Image.Image, path: str | Path) -> tuple[Image.Image, bool, tuple[int, int]]:
    """Fully decode ``img`` (detects truncation), then apply EXIF orientation."""
    raw_size = (img.height, img.width)
    try:
        img.load()
    except Image.DecompressionBombError as e:
        raise DataError(f"image too large to decode safely ({e})", path) from None
    except Exception as e:  # OSError, SyntaxError, EOFError, zlib.error ... from the decoders
        raise DataError(f"truncated or corrupt image data ({e})", path) from None
    transposed = False
    try:
        orientation = img.getexif().get(_EXIF_ORIENTATION_TAG, 1)
    except Exception:  # malformed EXIF is not fatal: the pixels are fine
        orientation = 1
    if orientation not in (None, 1):
        out = ImageOps.exif_transpose(img)
        if out is not None:
            img, transposed = out, True
    return img, transposed, raw_size


def _high_depth_to_float(arr: np.ndarray, mode: str) -> tuple[np.ndarray, str]:
    """Scale a single-channel ``I;16``/``I``/``F`` array to float in [0, 1]; return a note."""
    a = arr.astype(np.float64)
    if mode.startswith("I;16"):
        return a / 65535.0, "16-bit single-channel data rescaled from 0..65535"
    if mode == "I":
        peak = float(a.max()) if a.size else 0.0
        if peak <= 255:
            return np.clip(a, 0, 255) / 255.0, "32-bit integer data with 8-bit range used as is"
        return np.clip(a, 0, 65535) / 65535.0, "32-bit integer data treated as 16-bit (0..65535)"
    # "F"
    peak = float(np.nanmax(a)) if a.size else 0.0
    a = np.nan_to_num(a, nan=0.0)
    if peak <= 1.0:
        return np.clip(a, 0, 1), "float data in [0, 1] scaled by 255"
    return np.clip(a, 0, 255) / 255.0, "float data clipped to [0, 255]"


_FAST_FORMATS = ("JPEG", "PNG")
_ORIENT_OPS = {  # EXIF orientation -> numpy equivalent of ImageOps.exif_transpose
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, k=-1),
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
    8: lambda a: np.rot90(a, k=1),
}


def _orientation(img: Image.Image) -> int:
    try:
        o = img.getexif().get(_EXIF_ORIENTATION_TAG, 1)
    except Exception:  # malformed EXIF is not fatal: the pixels are fine
        return 1
    return o if o in _ORIENT_OPS else 1


def _fast_decode(path: str | Path, img: Image.Image, colour: bool
                 ) -> tuple[np.ndarray, int] | None:
    """OpenCV decode of an 8-bit RGB (``colour``) or grayscale JPEG/PNG: ``(array, orientation)``.

    None when not applicable (other modes, 16-bit, a PNG with an EXIF chunk, undecodable).
    """
    if img.format not in _FAST_FORMATS or _is_16bit(img):
        return None
    if img.mode != ("RGB" if colour else "L") or (not colour and "transparency" in img.info):
        return None
    buf = np.fromfile(str(path), dtype=np.uint8)
    if img.format == "PNG":
        # Pillow only finds an eXIf chunk stored after the pixels by decoding the whole file;
        # such (rare) files take the Pillow path, all others have orientation 1
        if "exif" in img.info or buf.tobytes().find(b"eXIf") >= 0:
            return None
        orientation = 1
    else:
        orientation = _orientation(img)
    flags = (cv2.IMREAD_COLOR if colour else cv2.IMREAD_GRAYSCALE) | cv2.IMREAD_IGNORE_ORIENTATION
    arr = cv2.imdecode(buf, flags)
    if arr is None or arr.shape[:2] != (img.height, img.width):
        return None  # let Pillow decode (and report) it
    if colour:
        arr = cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)
    if orientation != 1:
        arr = np.ascontiguousarray(_ORIENT_OPS[orientation](arr))
    return arr, orientation


def _alpha_composite(rgb: np.ndarray, alpha: np.ndarray, how: str) -> np.ndarray:
    a = alpha.astype(np.float32)[..., None] / 255.0
    bg = 0.0 if how == "black" else 255.0
    out = rgb.astype(np.float32) * a + bg * (1.0 - a)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def pil_to_rgb(img: Image.Image, alpha: str = "drop", mode: str | None = None
               ) -> tuple[np.ndarray, list[str]]:
    """The one conversion of a decoded (and oriented) Pillow image into uint8 RGB ``(H, W, 3)``,
    for files (:func:`load_image`) and in-memory PIL images alike; returns the notes too.

    ``mode`` is the file's mode when ``img`` was converted since (default ``img.mode``).
    """
    mode = mode or img.mode
    notes: list[str] = []
    alpha_arr: np.ndarray | None = None
    if mode in ("RGB",):
        rgb = np.asarray(img.convert("RGB") if img.mode != "RGB" else img)
    elif mode in ("L", "1"):
        g = np.asarray(img.convert("L"))
        rgb = np.repeat(g[..., None], 3, axis=2)
        notes.append("grayscale image replicated to 3 channels")
    elif mode in ("RGBA", "RGBa", "LA", "La", "PA"):
        rgba = np.asarray(img.convert("RGBA"))
        rgb, alpha_arr = rgba[..., :3], rgba[..., 3]
    elif mode == "P":
        if "transparency" in img.info:
            rgba = np.asarray(img.convert("RGBA"))
            rgb, alpha_arr = rgba[..., :3], rgba[..., 3]
        else:
            rgb = np.asarray(img.convert("RGB"))
        notes.append("palette image converted to RGB")
    elif mode.startswith("I") or mode == "F":
        f, note = _high_depth_to_float(np.asarray(img), mode)
        g = np.clip(np.rint(f * 255.0), 0, 255).astype(np.uint8)
        rgb = np.repeat(g[..., None], 3, axis=2)
        notes.append(note + "; replicated to 3 channels")
    else:  # CMYK, YCbCr, LAB, HSV, ...
        rgb = np.asarray(img.convert("RGB"))
        notes.append(f"{mode} image converted to RGB")
    if alpha_arr is not None:
        if mode.startswith("L"):
            notes.append("grayscale image replicated to 3 channels")
        if alpha == "drop":
            notes.append("alpha channel dropped")
        else:
            rgb = _alpha_composite(rgb, alpha_arr, alpha)
            notes.append(f"alpha composited over {alpha}")
    return np.ascontiguousarray(rgb, dtype=np.uint8), notes


def load_image(path: str | Path, alpha: str = "drop", fast: bool = True, pixels: bool = True
               ) -> LoadedImage:
    """Decode ``path`` into uint8 RGB ``(H, W, 3)``; see the module docstring for the rules.

    ``pixels=False`` (used by the data check) still decodes the whole file (so truncation is
    found) but skips building the array for plain RGB files (``array`` is None, ``hw`` set).
    """
    if alpha not in ALPHA_MODES:
        raise ValueError(f"alpha must be one of {ALPHA_MODES}, got {alpha!r}")
    with _open(path) as img0:
        frames = _frames_note(img0, path)
        fast_res = _fast_decode(path, img0, colour=True) if fast else None
        if fast_res is not None:
            arr, o = fast_res
            notes = frames + (["EXIF orientation applied"] if o != 1 else [])
            return LoadedImage(arr, img0.mode, (img0.height, img0.width), o != 1, notes)
        mode = img0.mode
        sixteen = _is_16bit(img0)
        img, transposed, raw_size = _decode(img0, path)
        notes: list[str] = frames
        if transposed:
            notes.append("EXIF orientation applied")
        if sixteen and mode in ("RGB", "RGBA"):
            notes.append("16-bit colour data reduced to 8 bits (high byte)")
        if not pixels and mode == "RGB":
            return LoadedImage(None, mode, raw_size, transposed, notes, (img.height, img.width))
        rgb, more = pil_to_rgb(img, alpha, mode)
        notes.extend(more)
    arr = np.ascontiguousarray(rgb, dtype=np.uint8)
    if notes:
        log.debug("%s: %s", path, "; ".join(notes))
    return LoadedImage(arr, mode, raw_size, transposed, notes)


def read_image(path: str | Path, alpha: str = "drop", fast: bool = True) -> np.ndarray:
    """Decode ``path`` into a uint8 RGB array ``(H, W, 3)`` (EXIF orientation applied).

    Raises :class:`DataError` naming the file for missing, empty, unreadable or truncated files.
    """
    return load_image(path, alpha=alpha, fast=fast).array


def load_mask(path: str | Path, fast: bool = True) -> LoadedMask:
    """Decode a mask into float32 ``(H, W)`` in [0, 1]; see the module docstring for the rules."""
    with _open(path) as img0:
        frames = _frames_note(img0, path)
        fast_res = _fast_decode(path, img0, colour=False) if fast else None
        if fast_res is not None:
            arr, o = fast_res
            notes = frames + (["EXIF orientation applied"] if o != 1 else [])
            m = _from_8bit(arr, notes)
            return LoadedMask(np.ascontiguousarray(m), img0.mode, (img0.height, img0.width),
                              o != 1, notes, bool(notes and notes[-1].startswith("mask stored")))
        mode = img0.mode
        sixteen = _is_16bit(img0)
        img, transposed, raw_size = _decode(img0, path)
        notes: list[str] = frames
        if transposed:
            notes.append("EXIF orientation applied")
        if sixteen and mode in ("RGB", "RGBA"):
            notes.append("16-bit colour data reduced to 8 bits (high byte)")
        binary_01 = False
        if mode == "1":
            m = np.asarray(img, dtype=np.float32)
        elif mode == "L":
            m = _from_8bit(np.asarray(img), notes)
            binary_01 = bool(notes and notes[-1].startswith("mask stored as 0/1"))
        elif mode.startswith("I") or mode == "F":
            f, note = _high_depth_to_float(np.asarray(img), mode)
            m = f.astype(np.float32)
            notes.append(note)
        else:
            if mode == "P":
                img = img.convert("RGBA" if "transparency" in img.info else "RGB")
                notes.append("palette mask converted to RGB")
            elif mode not in ("RGB", "RGBA", "LA", "La", "RGBa", "PA"):
                img = img.convert("RGB")
                notes.append(f"{mode} mask converted to RGB")
            a = np.asarray(img)
            if a.ndim == 2:
                a = a[..., None]
            colour = a[..., :-1] if img.mode in ("RGBA", "LA", "La", "RGBa", "PA") else a
            alpha_ch = a[..., -1] if colour is not a else None
            if (
                alpha_ch is not None
                and colour.min() == colour.max()
                and alpha_ch.min() != alpha_ch.max()
            ):
                chan = alpha_ch
                notes.append("mask stored in the alpha channel (colour channels constant): alpha used")
            else:
                chan = colour[..., 0]
                if colour.shape[-1] > 1 or alpha_ch is not None:
                    differ = colour.shape[-1] > 1 and bool(
                        np.any(colour[..., 1:] != colour[..., :1])
                    )
                    notes.append(
                        f"mask has {a.shape[-1]} channels: channel 0 used"
                        + (" (channels differ)" if differ else "")
                    )
            if a.dtype == np.uint16:
                m = chan.astype(np.float32) / 65535.0
            else:
                m = _from_8bit(chan, notes)
                binary_01 = bool(notes and notes[-1].startswith("mask stored as 0/1"))
    m = np.clip(np.ascontiguousarray(m, dtype=np.float32), 0.0, 1.0)
    if notes:
        log.debug("%s: %s", path, "; ".join(notes))
    return LoadedMask(m, mode, raw_size, transposed, notes, binary_01)


_INV255 = np.float32(1.0 / 255.0)


def _from_8bit(a: np.ndarray, notes: list[str]) -> np.ndarray:
    """8-bit mask to float in [0, 1]; a mask valued only in {0, 1} is read as binary."""
    if a.size and int(a.max()) == 1:
        notes.append("mask stored as 0/1 (not 0/255): 1 read as foreground")
        return a.astype(np.float32)
    return a.astype(np.float32) * _INV255


def read_mask(path: str | Path, fast: bool = True) -> np.ndarray:
    """Decode a mask into float32 ``(H, W)`` in [0, 1] (see :func:`load_mask`)."""
    return load_mask(path, fast=fast).array


def read_mask_levels(path: str | Path) -> np.ndarray:
    """A mask as cheaply as possible: uint8 levels 0..255 for 8-bit masks, else float32 [0, 1].

    Same rules as :func:`read_mask` (0/1 masks become 0/255); :func:`mask_to_unit` turns either
    form into float32 [0, 1].  Used by the training pipeline, which resizes 8-bit levels
    without first expanding the full-resolution mask to float.
    """
    with _open(path) as img0:
        fast_res = _fast_decode(path, img0, colour=False)
        if fast_res is not None:
            _frames_note(img0, path)
            arr = fast_res[0]
            if arr.size and int(arr.max()) == 1:
                arr = arr * np.uint8(255)
            return arr
    return load_mask(path, fast=False).array


def mask_to_unit(mask: np.ndarray) -> np.ndarray:
    """uint8 levels -> float32 in [0, 1]; float masks are returned as float32 unchanged."""
    if mask.dtype == np.uint8:
        return mask.astype(np.float32) * _INV255
    return mask.astype(np.float32, copy=False)


def image_size(path: str | Path) -> tuple[int, int]:
    """``(H, W)`` after EXIF orientation, read from the header only (no full decode)."""
    with _open(path) as img:
        h, w = img.height, img.width
        png_without_exif = img.format == "PNG" and "exif" not in img.info and (
            Path(path).read_bytes().find(b"eXIf") < 0)  # avoids Pillow decoding the pixels
        orientation = 1 if png_without_exif else _orientation(img)
    if orientation in (5, 6, 7, 8):
        h, w = w, h
    return h, w


def image_is_gray(path: str | Path) -> bool:
    """Whether the image file holds one colour channel, from its header only."""
    with _open(path) as img:
        return is_gray_mode(img.mode)
