"""Helpers for the data tests: write small real image/mask files, good and bad (no tests here).

Every bad file is a real file produced with Pillow / OpenCV (truncated by cutting bytes,
zero-byte by creating it empty, ...), so the rules are exercised on what users meet.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Keep check stamps out of ~/.cache and out of other tests."""
    monkeypatch.setenv("SALSEG_CACHE_DIR", str(tmp_path_factory.mktemp("salseg_cache")))
    monkeypatch.delenv("SALSEG_DATA_ROOT", raising=False)


def rgb(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def blob_mask(h: int = 48, w: int = 64, soft: bool = False) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    d = np.hypot(yy - h / 2, xx - w / 2)
    m = (d < min(h, w) / 3).astype(np.float32)
    if soft:
        m = np.clip((min(h, w) / 3 + 2 - d) / 4, 0, 1)
    return np.rint(m * 255).astype(np.uint8)


def write_image(path: Path, arr: np.ndarray | None = None, **save_kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb() if arr is None else arr).save(path, **save_kw)
    return path


def write_mask(path: Path, arr: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(blob_mask() if arr is None else arr).save(path)
    return path


def make_pairs(im_dir: Path, gt_dir: Path, n: int = 3, h: int = 48, w: int = 64,
               im_ext: str = ".jpg", prefix: str = "s") -> list[str]:
    stems = []
    for i in range(n):
        stem = f"{prefix}{i:03d}"
        write_image(im_dir / f"{stem}{im_ext}", rgb(h, w, i))
        write_mask(gt_dir / f"{stem}.png", blob_mask(h, w))
        stems.append(stem)
    return stems


def truncate_file(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def write_exif_rotated_jpeg(path: Path, arr: np.ndarray, orientation: int = 6) -> Path:
    img = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = orientation
    img.save(path, exif=exif, quality=95)
    return path


def write_16bit_gray(path: Path, arr16: np.ndarray) -> Path:
    assert arr16.dtype == np.uint16
    ok = cv2.imwrite(str(path), arr16)
    assert ok
    return path


def write_16bit_rgb(path: Path, arr16: np.ndarray) -> Path:
    ok = cv2.imwrite(str(path), arr16[..., ::-1].copy())
    assert ok
    return path
