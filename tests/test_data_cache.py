"""Resize cache: official truncation values, keyed by path/size/mtime/target, atomic, multi-process."""
from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F
from test_data_helpers import blob_mask, isolated_cache, rgb, write_image, write_mask  # noqa: F401

from salseg.data.cache import ResizeCache
from salseg.data.sources import Pair


def _pair(tmp_path, h=90, w=120):
    im = write_image(tmp_path / "a.png", rgb(h, w))
    gt = write_mask(tmp_path / "a_gt.png", blob_mask(h, w, soft=True))
    return Pair(str(im), str(gt), "a")


def test_entry_equals_official_dis_cache(tmp_path):
    pair = _pair(tmp_path)
    cache = ResizeCache(tmp_path / "c", truncate=True)
    img, m = cache.get(pair, (64, 80))
    assert img.dtype == np.uint8 and img.shape == (64, 80, 3) and m.shape == (64, 80)
    t = torch.from_numpy(rgb(90, 120)).permute(2, 0, 1)[None].float()
    ref = F.interpolate(t, (64, 80), mode="bilinear", align_corners=False).type(torch.uint8)
    np.testing.assert_array_equal(img, ref[0].permute(1, 2, 0).numpy())
    g = torch.from_numpy(blob_mask(90, 120, soft=True).astype(np.float32))[None, None]
    ref_m = F.interpolate(g, (64, 80), mode="bilinear", align_corners=False).type(torch.uint8)
    np.testing.assert_array_equal(np.rint(m * 255), ref_m[0, 0].numpy())


def test_hit_miss_and_invalidation_on_change(tmp_path):
    pair = _pair(tmp_path)
    cache = ResizeCache(tmp_path / "c")
    a = cache.get_array(pair, (16, 16))
    b = cache.get_array(pair, (16, 16))
    assert (cache.misses, cache.hits) == (1, 1) and isinstance(b, np.memmap)
    assert np.array_equal(a, b)
    cache.get_array(pair, (24, 24))  # other target size: another entry
    assert cache.misses == 2
    p1 = cache.path_for(pair, (16, 16))
    write_image(tmp_path / "a.png", rgb(90, 120, seed=9))  # the source changes
    st = os.stat(tmp_path / "a.png")
    os.utime(tmp_path / "a.png", ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))
    assert cache.path_for(pair, (16, 16)) != p1
    c = cache.get_array(pair, (16, 16))
    assert cache.misses == 3 and not np.array_equal(c[..., :3], a[..., :3])
    assert cache.prune(keep={cache.path_for(pair, (16, 16)).stem}) == 2


def _worker(args):
    root, pair, size = args
    c = ResizeCache(root)
    return c.get_array(pair, size).sum()


def test_several_processes_build_the_same_entry_safely(tmp_path):
    pair = _pair(tmp_path, 120, 160)
    root = tmp_path / "c"
    with ProcessPoolExecutor(max_workers=2) as ex:
        sums = list(ex.map(_worker, [(root, pair, (64, 64))] * 6))
    assert len(set(int(s) for s in sums)) == 1
    files = list(root.rglob("*"))
    assert [f for f in files if f.suffix == ".npy"] and not [f for f in files if ".tmp" in f.name]


def test_rounding_mode(tmp_path):
    pair = _pair(tmp_path)
    img, m = ResizeCache(tmp_path / "c", truncate=False, mask_interpolation="nearest").get(
        pair, (30, 40))
    from salseg.data.transforms import resize_image

    exact = resize_image(rgb(90, 120), (30, 40))
    assert np.abs(img - exact).max() <= 0.5 + 1e-4
    assert set(np.unique(np.rint(m * 255))) <= set(np.unique(blob_mask(90, 120, soft=True)))
