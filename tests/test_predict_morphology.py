"""The radius-independent erosion equals the footprint erosion it replaced, and the mask options
refuse values that are not finite or out of proportion with the image (issue 19, item 4)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from salseg.predict.postprocess import RefineOptions, check_refine_bounds, erode, refine


def _footprint_erosion(alpha: np.ndarray, radius: int) -> np.ndarray:
    """The previous implementation: a grey erosion over a disc footprint (cost ~ radius^2)."""
    r = np.arange(-radius, radius + 1)
    disc = (r[:, None] ** 2 + r[None, :] ** 2) <= radius * radius
    return ndimage.grey_erosion(alpha, footprint=disc, mode="constant", cval=0.0)


def _masks(shape: tuple[int, int], seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    soft = ndimage.gaussian_filter(rng.random(shape).astype(np.float32), 2)
    soft = ((soft - soft.min()) / (soft.max() - soft.min())).astype(np.float32)
    return {"soft": soft, "binary": (soft > 0.5).astype(np.float32),
            "8-bit": (np.floor(soft * 255) / np.float32(255)).astype(np.float32),
            "negative": soft - np.float32(0.3), "noise": rng.random(shape).astype(np.float32)}


@pytest.mark.parametrize("shape", [(40, 60), (33, 17), (64, 64), (1, 9), (9, 1)])
def test_erode_equals_the_footprint_erosion(shape):
    for kind, alpha in _masks(shape, seed=sum(shape)).items():
        for radius in (1, 2, 3, 4, 5, 7, 10, 13, 20, 33):
            expected = _footprint_erosion(alpha, radius)
            got = erode(alpha, radius)
            assert got.dtype == expected.dtype and got.shape == expected.shape
            assert np.array_equal(got, expected), (kind, shape, radius)


def test_erode_cost_does_not_follow_the_radius():
    """A radius far above the image costs nothing (the old footprint of 2001^2 elements per pixel
    took minutes and gigabytes); a large one on a soft mask takes ~1.2 r running minima."""
    alpha = _masks((64, 64), 1)["soft"]
    assert not erode(alpha, 10**9).any()
    assert not erode(alpha, 1000).any()
    assert np.array_equal(erode(alpha, 25), _footprint_erosion(alpha, 25))


@pytest.mark.parametrize("bad", [dict(feather=math.inf), dict(feather=math.nan),
                                 dict(threshold=math.nan), dict(erode=1.5)])
def test_refine_options_refuse_non_finite_values(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        RefineOptions(**bad)


def test_bounds_in_proportion_to_the_image():
    check_refine_bounds(RefineOptions(erode=64, feather=64.0), 64, 48)
    with pytest.raises(ValueError, match=r"erode=200 is above the image's longer side \(64 px"):
        check_refine_bounds(RefineOptions(erode=200), 64, 48)
    with pytest.raises(ValueError, match="feather=1e\\+09"):
        check_refine_bounds(RefineOptions(feather=1e9), 64, 48)
    alpha = _masks((20, 30), 2)["soft"]
    out = refine(alpha, RefineOptions(threshold=0.4, erode=3))
    assert np.array_equal(out, _footprint_erosion((alpha >= 0.4).astype(np.float32), 3))
