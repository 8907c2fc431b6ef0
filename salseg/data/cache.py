"""Optional uint8 resize cache for high-resolution training (e.g. DIS5K at 1024x1024).

Decoding a 2000x1500 JPEG and resizing it costs far more than the rest of the pipeline; the
official DIS loader therefore caches every image/mask resized to 1024x1024 as uint8
(``data_loader_cache.py``, OFFICIAL_NOTES §3.4).  :class:`ResizeCache` does the same, safely:

* one ``.npy`` file per (pair, target size): ``uint8 (H, W, 4)`` = RGB + mask, read back
  memory-mapped (``np.load(mmap_mode="r")``);
* the file name is a hash of the image and mask paths, their byte sizes and modification
  times, the target size, the interpolation/truncation settings and the alpha policy, so an
  edited source file gets a new entry (stale entries are left for ``prune()``);
* entries are written atomically (:func:`salseg.atomic.atomic_output`: a temporary file in the
  same folder, then renamed into place),
  so concurrent DataLoader workers or processes never read half-written files (two writers
  of the same entry produce identical bytes; the last rename wins).

Values: with ``truncate=True`` (the ``isnet_paper`` default) entries are exactly the official
cache (``floor`` of the float bilinear resize, image and mask).  Otherwise images and masks are
rounded to uint8 (an error of at most 0.5/255 relative to the uncached float pipeline).

Disk cost: ``H * W * 4`` bytes per pair: 4 MiB at 1024x1024 (DIS-TR: 3,000 pairs = 11.7 GiB;
DIS-VD: 1.8 GiB), 400 KiB at 320x320 (DUTS-TR: 10,553 pairs = 4.1 GiB).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from salseg.atomic import atomic_output
from salseg.data.io import read_image, read_mask
from salseg.data.sources import Pair
from salseg.data.transforms import resize_image, resize_mask

CACHE_VERSION = 1


class ResizeCache:
    """Resized uint8 image+mask store keyed by source path, size, mtime and target size."""

    def __init__(self, directory: str | Path, truncate: bool = True,
                 image_interpolation: str = "bilinear", mask_interpolation: str = "bilinear",
                 alpha: str = "drop") -> None:
        self.directory = Path(directory)
        self.truncate = bool(truncate)
        self.image_interpolation = image_interpolation
        self.mask_interpolation = mask_interpolation
        self.alpha = alpha
        self.hits = 0
        self.misses = 0

    def key(self, pair: Pair, size: tuple[int, int]) -> str:
        h = hashlib.sha1(f"v{CACHE_VERSION}|{size[0]}x{size[1]}|{self.truncate}|"
                         f"{self.image_interpolation}|{self.mask_interpolation}|{self.alpha}".encode())
        for f in (pair.image, pair.mask):
            if f is None:
                h.update(b"|none")
                continue
            st = os.stat(f)
            h.update(f"|{os.path.abspath(f)}|{st.st_size}|{st.st_mtime_ns}".encode())
        return h.hexdigest()

    def path_for(self, pair: Pair, size: tuple[int, int]) -> Path:
        k = self.key(pair, size)
        return self.directory / f"{size[0]}x{size[1]}" / k[:2] / f"{k}.npy"

    def build(self, pair: Pair, size: tuple[int, int]) -> np.ndarray:
        """Decode and resize one pair into ``uint8 (H, W, 4)`` (no caching)."""
        img = resize_image(read_image(pair.image, alpha=self.alpha), size,
                           self.image_interpolation, self.truncate)
        if pair.mask is not None:
            m = resize_mask(read_mask(pair.mask), size, self.mask_interpolation, self.truncate)
        else:
            m = np.zeros(size, np.float32)
        out = np.empty((size[0], size[1], 4), np.uint8)
        if self.truncate:
            out[..., :3] = np.clip(img, 0, 255).astype(np.uint8)  # already floored
            out[..., 3] = np.clip(np.rint(m * 255.0), 0, 255).astype(np.uint8)  # floored already
        else:
            out[..., :3] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
            out[..., 3] = np.clip(np.rint(m * 255.0), 0, 255).astype(np.uint8)
        return out

    def get_array(self, pair: Pair, size: tuple[int, int]) -> np.ndarray:
        """The cached ``uint8 (H, W, 4)`` entry (memory-mapped), built on a miss."""
        path = self.path_for(pair, size)
        try:
            arr = np.load(path, mmap_mode="r")
            if arr.shape == (size[0], size[1], 4) and arr.dtype == np.uint8:
                self.hits += 1
                return arr
        except (OSError, ValueError):
            pass
        self.misses += 1
        arr = self.build(pair, size)
        with atomic_output(path, overwrite=True) as tmp, open(tmp, "wb") as f:
            np.save(f, arr)
        return arr

    def get(self, pair: Pair, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """``(image uint8 (H, W, 3), mask float32 (H, W) in [0, 1])`` at ``size``."""
        arr = self.get_array(pair, size)
        return np.asarray(arr[..., :3]), arr[..., 3].astype(np.float32) / 255.0

    def prune(self, keep: set[str] | None = None) -> int:
        """Delete entries whose key is not in ``keep`` (all when None); returns the count."""
        n = 0
        for p in self.directory.rglob("*.npy"):
            if keep is None or p.stem not in keep:
                p.unlink(missing_ok=True)
                n += 1
        return n
