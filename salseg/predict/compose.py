"""Images made from a mask: RGBA cut-out, composite over a colour or an image, and a preview.

Foreground colour decontamination (``decontaminate=True``) removes the background colour that
bleeds into soft edges ("halos") with the blur-fusion foreground estimate of Forte & Pitié,
"Approximate Fast Foreground Colour Estimation" (ICIP 2021): with box blurs ``b_r``,
``F_r = b_r(F*a)/b_r(a)``, ``B_r = b_r(B*(1-a))/b_r(1-a)`` and
``F <- F_r + a*(I - a*F_r - (1-a)*B_r)``, run once with r = 90 (F = B = I) and once with r = 6
on the result.  Only colours change; the alpha stays the predicted one.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageColor
from scipy import ndimage

from salseg.models.restore import to_uint8


def _box(x: np.ndarray, radius: int) -> np.ndarray:
    size = (2 * radius + 1, 2 * radius + 1) + ((1,) if x.ndim == 3 else ())
    return ndimage.uniform_filter(x, size=size, mode="nearest")


def _blur_fusion(image: np.ndarray, fg: np.ndarray, bg: np.ndarray, alpha: np.ndarray,
                 radius: int) -> tuple[np.ndarray, np.ndarray]:
    a = alpha[..., None]
    eps = np.float32(1e-5)
    blurred_a = _box(a, radius)
    fg_blur = _box(fg * a, radius) / (blurred_a + eps)
    bg_blur = _box(bg * (1 - a), radius) / ((1 - blurred_a) + eps)
    fg_new = fg_blur + a * (image - a * fg_blur - (1 - a) * bg_blur)
    return np.clip(fg_new, 0, 1), bg_blur


def decontaminate(image: np.ndarray, alpha: np.ndarray, radii: Sequence[int] = (90, 6)
                  ) -> np.ndarray:
    """Estimated foreground colours (uint8 ``(H, W, 3)``) for ``image`` and ``alpha`` in [0, 1]."""
    img = image.astype(np.float32) / 255
    a = np.clip(alpha.astype(np.float32), 0, 1)
    fg, bg = img, img
    for r in radii:
        r = max(1, min(int(r), max(image.shape[:2])))
        fg, bg = _blur_fusion(img, fg, bg, a, r)
    return np.clip(np.rint(fg * 255), 0, 255).astype(np.uint8)


def cutout(image: np.ndarray, alpha: np.ndarray, decontaminated: np.ndarray | None = None
           ) -> np.ndarray:
    """RGBA uint8 ``(H, W, 4)``: the (optionally decontaminated) colours with the mask as alpha."""
    rgb = image if decontaminated is None else decontaminated
    return np.concatenate([rgb, to_uint8(alpha)[..., None]], axis=2)


def parse_color(text: str) -> tuple[int, int, int]:
    """``"white"``, ``"#00ff00"`` or ``"0,255,0"`` -> an RGB triple."""
    text = text.strip()
    if "," in text:
        parts = [int(p) for p in text.split(",")]
        if len(parts) != 3 or any(not 0 <= p <= 255 for p in parts):
            raise ValueError(f"colour {text!r}: expected three values in 0..255")
        return parts[0], parts[1], parts[2]
    try:
        rgb = ImageColor.getrgb(text)
    except ValueError:
        raise ValueError(f"unknown colour {text!r} (use a name, #rrggbb or r,g,b)") from None
    return rgb[0], rgb[1], rgb[2]


def background_like(image: np.ndarray, color: str | tuple[int, int, int] = "white",
                    background: np.ndarray | str | Path | None = None) -> np.ndarray:
    """A uint8 ``(H, W, 3)`` background of ``image``'s size: a colour, or an image stretched
    (bilinear) to that size."""
    height, width = image.shape[:2]
    if background is not None:
        if not isinstance(background, np.ndarray):
            from salseg.data.io import read_image

            background = read_image(background)
        if background.shape[:2] != (height, width):
            background = np.asarray(Image.fromarray(background).resize((width, height),
                                                                       Image.BILINEAR))
        return background
    rgb = parse_color(color) if isinstance(color, str) else color
    return np.broadcast_to(np.asarray(rgb, dtype=np.uint8), (height, width, 3))


def composite(image: np.ndarray, alpha: np.ndarray, background: np.ndarray,
              decontaminated: np.ndarray | None = None) -> np.ndarray:
    """``fg * a + background * (1 - a)`` as uint8 RGB (alpha quantised like the saved mask)."""
    fg = (image if decontaminated is None else decontaminated).astype(np.float32)
    a = to_uint8(alpha).astype(np.float32)[..., None] / 255
    out = fg * a + background.astype(np.float32) * (1 - a)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def checkerboard(height: int, width: int, tile: int = 16) -> np.ndarray:
    """Grey checkerboard (uint8 RGB) used to show transparency."""
    yy, xx = np.indices((height, width))
    light = ((yy // tile + xx // tile) % 2 == 0)
    return np.where(light[..., None], np.uint8(204), np.uint8(153)).repeat(3, axis=2)


def preview(image: np.ndarray, alpha: np.ndarray, decontaminated: np.ndarray | None = None,
            max_height: int = 480) -> np.ndarray:
    """Side by side: image | mask | cut-out over a checkerboard, scaled to ``max_height``."""
    height, width = image.shape[:2]
    scale = min(1.0, max_height / height)
    w, h = max(1, round(width * scale)), max(1, round(height * scale))

    def fit(a: np.ndarray) -> np.ndarray:
        return np.asarray(Image.fromarray(a).resize((w, h), Image.BILINEAR)) if scale < 1 else a

    mask = np.repeat(to_uint8(alpha)[..., None], 3, axis=2)
    over = composite(image, alpha, checkerboard(height, width), decontaminated)
    gap = np.full((h, 4, 3), 255, dtype=np.uint8)
    return np.concatenate([fit(image), gap, fit(mask), gap, fit(over)], axis=1)


def render_output(kind: str, image: np.ndarray | None, alpha: np.ndarray,
                  fg: np.ndarray | None = None, bg_color: str | tuple[int, int, int] = "white",
                  background: np.ndarray | str | Path | None = None) -> np.ndarray:
    """The array of one output ``kind`` (``mask``, ``cutout``, ``composite``, ``preview``):
    the one render path of ``salseg-predict``'s files and ``salseg-serve``'s responses.
    ``fg``: the decontaminated foreground, when asked for (computed once per image)."""
    if kind == "mask":
        return to_uint8(alpha)
    if image is None:
        raise ValueError("the image is needed for cut-outs, composites and previews")
    if kind == "cutout":
        return cutout(image, alpha, fg)
    if kind == "composite":
        return composite(image, alpha, background_like(image, bg_color, background), fg)
    return preview(image, alpha, fg)
