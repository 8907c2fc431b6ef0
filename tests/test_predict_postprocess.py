"""Mask clean-up options, quantisation, decontamination, cut-outs, composites and previews."""
from __future__ import annotations

import numpy as np
import pytest

from salseg.models.restore import to_uint8
from salseg.predict.compose import (
    background_like,
    checkerboard,
    composite,
    cutout,
    decontaminate,
    parse_color,
    preview,
)
from salseg.predict.postprocess import (
    RefineOptions,
    erode,
    feather,
    fill_holes,
    keep_largest_component,
    refine,
)


def _blobs() -> np.ndarray:
    a = np.zeros((40, 60), np.float32)
    a[5:25, 5:25] = 1.0  # big object
    a[4, 5:25] = 0.3  # its soft edge
    a[30:35, 40:45] = 1.0  # small object
    a[29, 40:45] = 0.3  # its soft edge
    return a


def test_to_uint8_truncates():
    a = np.array([0.0, 0.5, 127.9 / 255, 1.0, 1.2, -0.1], np.float32)
    np.testing.assert_array_equal(to_uint8(a), [0, 127, 127, 255, 255, 0])
    levels = np.arange(256, dtype=np.float32) / 255
    np.testing.assert_array_equal(to_uint8(levels), np.arange(256))


def test_threshold():
    a = np.linspace(0, 1, 11, dtype=np.float32).reshape(1, -1)
    out = refine(a, RefineOptions(threshold=0.45))
    np.testing.assert_array_equal(out[0], (a[0] >= 0.45).astype(np.float32))


def test_largest_component_keeps_soft_edge_of_the_kept_object():
    a = _blobs()
    out = keep_largest_component(a)
    assert out[10, 10] == 1 and out[4, 10] == pytest.approx(0.3)  # big object and its edge
    assert out[32, 42] == 0 and out[29, 42] == 0  # small object and its edge removed
    assert refine(a, RefineOptions(largest_component=True)).sum() == out.sum()
    single = np.zeros((5, 5), np.float32)
    np.testing.assert_array_equal(keep_largest_component(single), single)


def test_fill_holes():
    a = np.zeros((20, 20), np.float32)
    a[2:18, 2:18] = 1
    a[8:12, 8:12] = 0.1  # hole
    a[0:2, 0:2] = 0.2  # background touching the border: untouched
    out = fill_holes(a)
    assert (out[8:12, 8:12] == 1).all() and out[0, 0] == pytest.approx(0.2)


def test_erode_shrinks_by_n_pixels():
    a = np.zeros((30, 30), np.float32)
    a[5:25, 5:25] = 1
    out = erode(a, 2)
    assert out[7:23, 7:23].min() == 1 and out[6, 10] == 0 and out[5:25, 5:25].sum() == 16 * 16
    full = np.ones((10, 10), np.float32)
    assert erode(full, 1)[0, 5] == 0  # the image border counts as background


def test_feather_softens_the_edge():
    a = np.zeros((30, 30), np.float32)
    a[:, 15:] = 1
    out = feather(a, 2.0)
    assert 0 < out[10, 14] < 0.5 < out[10, 15] < 1
    assert out[10, 0] == pytest.approx(0, abs=1e-6) and out[10, 29] == pytest.approx(1, abs=1e-6)


def test_refine_order_and_validation():
    a = _blobs()
    out = refine(a, RefineOptions(threshold=0.5, largest_component=True, erode=1, feather=0.5))
    assert out[32, 42] == 0 and out[15, 15] == pytest.approx(1, abs=1e-3)
    assert refine(a, RefineOptions()) is a
    for bad in (dict(threshold=1.5), dict(erode=-1), dict(feather=-2.0)):
        with pytest.raises(ValueError):
            RefineOptions(**bad)


def test_cutout_composite_and_preview():
    img = np.zeros((20, 30, 3), np.uint8)
    img[..., 0] = 200
    alpha = np.zeros((20, 30), np.float32)
    alpha[:, 15:] = 1
    alpha[:, 14] = 0.5
    rgba = cutout(img, alpha)
    assert rgba.shape == (20, 30, 4) and rgba[0, 20, 3] == 255 and rgba[0, 0, 3] == 0
    assert rgba[0, 14, 3] == 127
    bg = background_like(img, "0,0,255")
    comp = composite(img, alpha, bg)
    assert tuple(comp[0, 0]) == (0, 0, 255) and tuple(comp[0, 20]) == (200, 0, 0)
    bg_img = np.full((5, 5, 3), 9, np.uint8)
    assert background_like(img, background=bg_img).shape == (20, 30, 3)
    prev = preview(img, alpha, max_height=10)
    assert prev.shape[0] == 10 and prev.shape[2] == 3
    assert checkerboard(4, 40, tile=16).shape == (4, 40, 3)
    assert parse_color("white") == (255, 255, 255) and parse_color("#00ff00") == (0, 255, 0)
    with pytest.raises(ValueError):
        parse_color("nocolour")


def test_decontaminate_removes_background_colour_from_soft_edges():
    h, w = 40, 40
    alpha = np.zeros((h, w), np.float32)
    alpha[:, 20:] = 1
    alpha[:, 18:20] = 0.5
    fg, bg = np.array([220, 30, 30], np.float32), np.array([20, 20, 230], np.float32)
    img = (alpha[..., None] * fg + (1 - alpha[..., None]) * bg).round().astype(np.uint8)
    est = decontaminate(img, alpha)
    edge_before = img[:, 18].astype(float)
    edge_after = est[:, 18].astype(float)
    # the halo pixel's colour moves towards the true foreground colour
    assert np.abs(edge_after - fg).sum(1).mean() < 0.5 * np.abs(edge_before - fg).sum(1).mean()
    np.testing.assert_array_equal(est[:, 30], img[:, 30])  # opaque pixels keep their colour
    rgba = cutout(img, alpha, est)
    assert rgba[0, 18, 3] == 127 and tuple(rgba[0, 18, :3]) == tuple(est[0, 18])
