"""Embedded synthetic salient-object data set, generated deterministically from a seed.

``ensure_synthetic(root, ...)`` builds ``<root>/synthetic/<variant>-s<seed>-<H>x<W>-<n_train>-<n_val>/``
on first use (in a temporary folder renamed into place, so concurrent first uses and
interrupted runs never leave a half-written set) and returns its path.  Layout::

    <set>/train/im/syn_train_0000.jpg   <set>/train/gt/syn_train_0000.png
    <set>/val/im/...                    <set>/val/gt/...
    <set>/manifest.json                 parameters + generator version

What the images look like (the design goal is "hard for an untrained model, learnable by a
small CNN in a few CPU minutes"):

* Background: a smooth two-colour field, 4-9 smooth-shaded clutter shapes (ellipses,
  polygons, bars) with hard edges, and a weak per-pixel grain.  No fine texture, no thin
  lines.
* Foreground: 1-3 objects (radial blobs, star/convex polygons, rings, bars; the ``dis``
  variant adds thin wires and meshes) filled with a *fine periodic texture* (stripes,
  checkers, dots, grids; period 7-14 px at 320 px) in two random colours.
* Colours of both are drawn from the same distribution, so no global intensity or colour
  threshold separates them; what separates them is local texture (and, for wires, thinness),
  which a small CNN learns quickly.
* Masks are exact: the image is composited with the same binary mask that is saved.

Variant ``sod`` (default): 320x320, 200 train / 50 val.  Variant ``dis``: 768x1024 (H x W),
thin structures (wires, meshes, rings with spokes), 60 train / 20 val; generated only when
asked for.  Per-image random streams are seeded with ``(seed, split, index)``, so an image does
not depend on how many others are generated.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw

from salseg.atomic import mkdtemp

GENERATOR_VERSION = 1
VARIANT_DEFAULTS: dict[str, dict] = {
    "sod": {"size": (320, 320), "n_train": 200, "n_val": 50},
    "dis": {"size": (768, 1024), "n_train": 60, "n_val": 20},
}
_SPLIT_IDS = {"train": 1, "val": 2}


@dataclass(frozen=True)
class SyntheticSpec:
    """Parameters that fully determine a synthetic set."""

    variant: str = "sod"
    seed: int = 0
    size: tuple[int, int] = (320, 320)  # (H, W)
    n_train: int = 200
    n_val: int = 50
    jpeg_quality: int = 92

    @property
    def folder_name(self) -> str:
        h, w = self.size
        return f"{self.variant}-s{self.seed}-{h}x{w}-{self.n_train}-{self.n_val}"


def make_spec(
    variant: str = "sod",
    seed: int = 0,
    size: int | tuple[int, int] | list[int] | None = None,
    n_train: int | None = None,
    n_val: int | None = None,
    jpeg_quality: int = 92,
) -> SyntheticSpec:
    """Build a :class:`SyntheticSpec`, filling unset fields from the variant defaults."""
    if variant not in VARIANT_DEFAULTS:
        raise ValueError(f"unknown synthetic variant {variant!r}; expected one of {list(VARIANT_DEFAULTS)}")
    d = VARIANT_DEFAULTS[variant]
    if size is None:
        hw = d["size"]
    elif isinstance(size, int):
        hw = (size, size)
    else:
        hw = (int(size[0]), int(size[1]))
    if min(hw) < 32:
        raise ValueError(f"synthetic image size must be at least 32 px, got {hw}")
    return SyntheticSpec(
        variant=variant,
        seed=int(seed),
        size=hw,
        n_train=int(d["n_train"] if n_train is None else n_train),
        n_val=int(d["n_val"] if n_val is None else n_val),
        jpeg_quality=int(jpeg_quality),
    )


# --------------------------------------------------------------------------- rendering


def _smooth_field(rng: np.random.Generator, h: int, w: int, cells: int, channels: int) -> np.ndarray:
    """Low-frequency random field in [0, 1], shape (h, w, channels)."""
    small = rng.random((cells, cells, channels)).astype(np.float32)
    big = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    if big.ndim == 2:
        big = big[..., None]
    return big  # bicubic overshoot of a few percent is harmless (the image is clipped at the end)


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0.0, 255.0, size=3).astype(np.float32)


def _colour_pair(rng: np.random.Generator, min_contrast: float = 70.0) -> tuple[np.ndarray, np.ndarray]:
    """Two colours whose mean intensities differ by at least ``min_contrast``."""
    for _ in range(50):
        a, b = _random_colour(rng), _random_colour(rng)
        if abs(float(a.mean() - b.mean())) >= min_contrast:
            return a, b
    return np.array([30.0, 30.0, 30.0], np.float32), np.array([220.0, 220.0, 220.0], np.float32)


def _texture_at(rng: np.random.Generator, ys: np.ndarray, xs: np.ndarray, h: int, w: int,
                scale: float) -> np.ndarray:
    """A fine periodic two-colour texture sampled at pixels ``(ys, xs)``: float32 (N, 3)."""
    period = rng.uniform(7.0, 14.0) * scale
    theta = rng.uniform(0, math.pi)
    k = np.float32(2 * math.pi / period)
    c, s = np.float32(math.cos(theta)), np.float32(math.sin(theta))
    u = (xs * c + ys * s) * k
    v = (ys * c - xs * s) * k
    kind = rng.integers(0, 4)
    if kind == 0:  # stripes
        t = np.sin(u)
    elif kind == 1:  # checker
        t = np.sin(u) * np.sin(v)
    elif kind == 2:  # dots
        t = np.cos(u) + np.cos(v) - 0.6
    else:  # grid
        t = np.maximum(np.cos(u), np.cos(v)) * 2 - 1.2
    t = (np.clip(t * 2.5, -1, 1) * 0.5 + 0.5)[:, None]  # sharpened, in [0, 1]
    c1, c2 = _colour_pair(rng)
    shade = _smooth_field(rng, h, w, 3, 1)[ys.astype(np.intp), xs.astype(np.intp)]  # illumination
    return (c1[None, :] * (1 - t) + c2[None, :] * t) * (0.8 + 0.4 * shade)


def _shaded_fill_at(rng: np.random.Generator, ys: np.ndarray, xs: np.ndarray, h: int, w: int
                    ) -> np.ndarray:
    """A smooth linear-gradient fill sampled at pixels ``(ys, xs)``: float32 (N, 3)."""
    c1, c2 = _random_colour(rng), _random_colour(rng)
    theta = rng.uniform(0, 2 * math.pi)
    g = (xs * np.float32(math.cos(theta)) + ys * np.float32(math.sin(theta))) / max(h, w)
    if g.size:
        g = (g - g.min()) / max(float(g.max() - g.min()), 1e-6)
    return c1[None, :] * (1 - g[:, None]) + c2[None, :] * g[:, None]


def _polygon_points(rng, cx, cy, r, n, irregular: float, star: bool) -> list[tuple[float, float]]:
    angles = np.sort(rng.uniform(0, 2 * math.pi, n))
    pts = []
    for i, a in enumerate(angles):
        rr = r * rng.uniform(1 - irregular, 1.0)
        if star and i % 2 == 1:
            rr *= rng.uniform(0.35, 0.6)
        pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
    return pts


def _blob_points(rng, cx, cy, r) -> list[tuple[float, float]]:
    k = np.arange(1, 6)
    amp = rng.uniform(0, 0.22, 5) / k**0.7
    phase = rng.uniform(0, 2 * math.pi, 5)
    pts = []
    for a in np.linspace(0, 2 * math.pi, 96, endpoint=False):
        rr = r * (1 + float(np.sum(amp * np.cos(k * a + phase))))
        pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a) * rng.uniform(0.98, 1.02)))
    return pts


def _object_mask(rng: np.random.Generator, h: int, w: int, variant: str, scale: float
                 ) -> Image.Image:
    """One foreground object as a binary PIL ``L`` mask (0/255)."""
    img = Image.new("L", (w, h), 0)
    d = ImageDraw.Draw(img)
    s = min(h, w)
    r = rng.uniform(0.14, 0.32) * s
    cx = rng.uniform(0.2, 0.8) * w
    cy = rng.uniform(0.2, 0.8) * h
    kinds = ["blob", "polygon", "star", "ring", "bar"]
    if variant == "dis":  # half of the objects are thin structures
        kinds += ["wires", "mesh", "spoked_ring", "wires", "mesh"]
    kind = kinds[int(rng.integers(0, len(kinds)))]
    if kind == "blob":
        d.polygon(_blob_points(rng, cx, cy, r), fill=255)
    elif kind == "polygon":
        d.polygon(_polygon_points(rng, cx, cy, r, int(rng.integers(3, 9)), 0.3, False), fill=255)
    elif kind == "star":
        n = 2 * int(rng.integers(4, 8))
        d.polygon(_polygon_points(rng, cx, cy, r * 1.1, n, 0.1, True), fill=255)
    elif kind == "ring":
        thick = rng.uniform(0.3, 0.55) * r
        d.ellipse([cx - r, cy - r * 0.9, cx + r, cy + r * 0.9], fill=255)
        ri = r - thick
        d.ellipse([cx - ri, cy - ri * 0.9, cx + ri, cy + ri * 0.9], fill=0)
    elif kind == "bar":
        length, width = r * 2.2, r * rng.uniform(0.4, 0.8)
        a = rng.uniform(0, math.pi)
        dx, dy = math.cos(a), math.sin(a)
        px, py = -dy, dx
        corners = [
            (cx + dx * length / 2 + px * width / 2, cy + dy * length / 2 + py * width / 2),
            (cx + dx * length / 2 - px * width / 2, cy + dy * length / 2 - py * width / 2),
            (cx - dx * length / 2 - px * width / 2, cy - dy * length / 2 - py * width / 2),
            (cx - dx * length / 2 + px * width / 2, cy - dy * length / 2 + py * width / 2),
        ]
        d.polygon(corners, fill=255)
    elif kind == "wires":
        d.polygon(_blob_points(rng, cx, cy, r * 0.45), fill=255)
        for _ in range(int(rng.integers(3, 7))):
            pts = [(cx, cy)]
            for _ in range(int(rng.integers(2, 5))):
                lx, ly = pts[-1]
                a = rng.uniform(0, 2 * math.pi)
                step = rng.uniform(0.15, 0.35) * s
                pts.append((lx + step * math.cos(a), ly + step * math.sin(a)))
            d.line(pts, fill=255, width=max(2, int(round(rng.uniform(2, 4) * scale))), joint="curve")
    elif kind == "mesh":
        x0, x1 = cx - r * 1.2, cx + r * 1.2
        y0, y1 = cy - r, cy + r
        lw = max(2, int(round(rng.uniform(2, 3.5) * scale)))
        step = rng.uniform(14, 30) * scale
        d.rectangle([x0, y0, x1, y1], outline=255, width=lw * 2)
        x = x0
        while x <= x1:
            d.line([(x, y0), (x, y1)], fill=255, width=lw)
            x += step
        y = y0
        while y <= y1:
            d.line([(x0, y), (x1, y)], fill=255, width=lw)
            y += step
    else:  # spoked_ring
        lw = max(2, int(round(rng.uniform(3, 5) * scale)))
        d.ellipse([cx - r, cy - r, cx + r, cy + r], outline=255, width=lw * 2)
        d.ellipse([cx - r * 0.2, cy - r * 0.2, cx + r * 0.2, cy + r * 0.2], fill=255)
        for a in np.linspace(0, 2 * math.pi, int(rng.integers(5, 13)), endpoint=False):
            d.line([(cx, cy), (cx + r * math.cos(a), cy + r * math.sin(a))], fill=255, width=lw)
    return img


def _nonzero(mask: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates of the non-zero pixels of a PIL ``L`` mask (searched within its bbox)."""
    box = mask.getbbox()
    if box is None:
        return np.zeros(0, np.intp), np.zeros(0, np.intp)
    ys, xs = np.nonzero(np.asarray(mask.crop(box)))
    return ys + box[1], xs + box[0]


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    c1, c2 = _random_colour(rng), _random_colour(rng)
    hs, ws = max(8, h // 8), max(8, w // 8)  # smooth content: compute small, upsample once
    f = _smooth_field(rng, hs, ws, int(rng.integers(2, 6)), 1)
    small = c1 * (1 - f) + c2 * f + (_smooth_field(rng, hs, ws, 4, 3) - 0.5) * 60.0
    bg = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    s = min(h, w)
    for _ in range(int(rng.integers(4, 10))):
        m = Image.new("L", (w, h), 0)
        d = ImageDraw.Draw(m)
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        r = rng.uniform(0.08, 0.3) * s
        k = rng.integers(0, 3)
        if k == 0:
            d.ellipse([cx - r, cy - r * rng.uniform(0.4, 1), cx + r, cy + r], fill=255)
        elif k == 1:
            d.polygon(_polygon_points(rng, cx, cy, r, int(rng.integers(3, 7)), 0.4, False), fill=255)
        else:
            d.rectangle([cx - r, cy - r * 0.3, cx + r, cy + r * 0.3], fill=255)
        ys, xs = _nonzero(m)
        bg[ys, xs] = _shaded_fill_at(rng, ys.astype(np.float32), xs.astype(np.float32), h, w)
    return bg


def render_pair(spec: SyntheticSpec, split: str, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Render one ``(image uint8 (H, W, 3), mask uint8 (H, W) in {0, 255})`` pair."""
    variant_id = list(VARIANT_DEFAULTS).index(spec.variant)
    rng = np.random.default_rng([spec.seed, variant_id, _SPLIT_IDS[split], index, GENERATOR_VERSION])
    h, w = spec.size
    scale = min(h, w) / 320.0
    if spec.variant == "dis":
        scale = max(1.0, min(h, w) / 480.0)
    image = _background(rng, h, w)
    mask = np.zeros((h, w), dtype=bool)
    n_obj = int(rng.choice([1, 1, 1, 2, 2, 3]))
    for i in range(n_obj + 1):
        if i == n_obj and mask.any():
            break  # the extra round only runs when every object fell outside the image
        m = _object_mask(rng, h, w, spec.variant if i < n_obj else "sod", scale)
        ys, xs = _nonzero(m)
        image[ys, xs] = _texture_at(rng, ys.astype(np.float32), xs.astype(np.float32), h, w, scale)
        mask[ys, xs] = True
    grain = np.float32(rng.uniform(2.0, 8.0))
    image += rng.standard_normal(size=(h, w, 1), dtype=np.float32) * grain  # luminance grain
    img8 = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return img8, mask.astype(np.uint8) * 255


# --------------------------------------------------------------------------- on disk


def _write_split(spec: SyntheticSpec, folder: Path, split: str, n: int) -> None:
    (folder / split / "im").mkdir(parents=True)
    (folder / split / "gt").mkdir(parents=True)
    for i in range(n):
        img, mask = render_pair(spec, split, i)
        stem = f"syn_{split}_{i:04d}"
        ok, buf = cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, spec.jpeg_quality])
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        (folder / split / "im" / f"{stem}.jpg").write_bytes(buf.tobytes())
        ok, buf = cv2.imencode(".png", mask, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        if not ok:
            raise RuntimeError("PNG encoding failed")
        (folder / split / "gt" / f"{stem}.png").write_bytes(buf.tobytes())


def synthetic_dir(root: str | Path, spec: SyntheticSpec) -> Path:
    return Path(root) / "synthetic" / spec.folder_name


def _is_complete(folder: Path, spec: SyntheticSpec) -> bool:
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return manifest.get("spec") == _spec_json(spec) and manifest.get("version") == GENERATOR_VERSION


def _spec_json(spec: SyntheticSpec) -> dict:
    d = asdict(spec)
    d["size"] = list(spec.size)
    return d


def ensure_synthetic(root: str | Path, spec: SyntheticSpec | None = None, verbose: bool = True) -> Path:
    """Return the folder of ``spec`` under ``<root>/synthetic``, generating it if needed.

    Generation happens in a temporary sibling folder that is renamed into place when
    complete; if another process finished first, its copy is kept and ours discarded.
    """
    spec = spec or make_spec()
    final = synthetic_dir(root, spec)
    if _is_complete(final, spec):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():  # incomplete or from another generator version: rebuild, atomically
        stale = Path(tempfile.mkdtemp(prefix=f".stale-{spec.folder_name}-", dir=final.parent))
        try:
            os.replace(final, stale / "old")
        except OSError:
            pass
        shutil.rmtree(stale, ignore_errors=True)
    t0 = time.perf_counter()
    tmp = Path(mkdtemp(final.parent, prefix=f".tmp-{spec.folder_name}-"))
    try:
        _write_split(spec, tmp, "train", spec.n_train)
        _write_split(spec, tmp, "val", spec.n_val)
        manifest = {"version": GENERATOR_VERSION, "spec": _spec_json(spec),
                    "counts": {"train": spec.n_train, "val": spec.n_val}}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
        try:
            os.rename(tmp, final)
        except OSError:
            if not _is_complete(final, spec):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    if verbose:
        print(f"[salseg] generated synthetic set {final} "
              f"({spec.n_train} train / {spec.n_val} val) in {time.perf_counter() - t0:.1f}s")
    return final
