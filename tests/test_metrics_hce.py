"""HCE without OpenCV: the contour tracer equals cv2.findContours (RETR_TREE, CHAIN_APPROX_NONE),
the polygon simplification equals cv2.approxPolyDP of OpenCV 4.12 (fixture made with 4.12), and HCE
equals the OpenCV-4.12 reference algorithm on random masks; skeleton cache."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from scipy import ndimage

from salseg.metrics import HumanCorrectionEffort, SkeletonCache
from salseg.metrics.contours import find_contours
from salseg.metrics.hce import gt_skeleton, hce_parts
from salseg.metrics.polygon import approx_poly_dp_open

FIX = Path(__file__).parent / "fixtures" / "metrics"


def random_masks(seed: int, n: int):
    rng = np.random.default_rng(seed)
    for i in range(n):
        h, w = (int(v) for v in rng.integers(1, 48, 2))
        kind = i % 4
        if kind == 0:
            m = rng.random((h, w)) < rng.uniform(0.2, 0.8)
        elif kind == 1:
            m = ndimage.binary_opening(rng.random((h, w)) < 0.5)
        elif kind == 2:
            m = np.zeros((h, w), bool)
            for _ in range(5):
                y, x = int(rng.integers(0, h)), int(rng.integers(0, w))
                m[max(0, y - 3):y + 3, max(0, x - 4):x + 4] = True
            m[rng.random((h, w)) < 0.1] = False
        else:
            m = ndimage.gaussian_filter(rng.random((h, w)), 1.5) > 0.5
        yield m


def test_contours_equal_opencv_on_random_masks():
    n_contours = 0
    for m in random_masks(0, 200):
        ref, hier = cv2.findContours(m.astype(np.uint8), cv2.RETR_TREE, cv2.CHAIN_APPROX_NONE)
        ours, info = find_contours(m)
        assert len(ours) == len(ref)
        for i, (a, b) in enumerate(zip(ours, ref)):
            assert np.array_equal(a, b[:, 0, :])
            assert info[i][0] == hier[0][i][3]  # same parent
        n_contours += len(ours)
    assert n_contours > 500


def test_contours_many_labels():
    """More than 127 borders (OpenCV's 8-bit label space wraps) keep the same order."""
    rng = np.random.default_rng(1)
    m = rng.random((120, 160)) < 0.45
    ref, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_TREE, cv2.CHAIN_APPROX_NONE)
    ours, _ = find_contours(m)
    assert len(ref) > 300
    assert all(np.array_equal(a, b[:, 0, :]) for a, b in zip(ours, ref))


def test_contours_edge_cases():
    assert find_contours(np.zeros((5, 5), bool))[0] == []
    single = np.zeros((3, 3), bool)
    single[1, 1] = True
    c, info = find_contours(single)
    assert len(c) == 1 and c[0].tolist() == [[1, 1]] and info == [(-1, False)]
    full = np.ones((4, 6), bool)
    c, _ = find_contours(full)
    assert len(c) == 1 and len(c[0]) == 16  # the image border is a contour (OpenCV pads)
    with pytest.raises(ValueError, match="2-D"):
        find_contours(np.zeros((2, 2, 2)))


def test_approx_poly_dp_equals_opencv_412():
    data = json.loads((FIX / "approxpolydp_opencv412.json").read_text())
    assert data["opencv"].startswith("4.12")
    for case in data["curves"]:
        got = approx_poly_dp_open(np.array(case["points"]), data["epsilon"])
        assert len(got) == case["count_opencv412"], case["points"]


def test_approx_poly_dp_small_cases():
    assert len(approx_poly_dp_open(np.array([[3, 4]]), 2.0)) == 1
    assert len(approx_poly_dp_open(np.array([[0, 0], [1, 1]]), 2.0)) == 2
    straight = np.array([[i, 0] for i in range(20)])
    assert approx_poly_dp_open(straight, 2.0).tolist() == [[0, 0], [19, 0]]
    corner = np.array([[i, 0] for i in range(10)] + [[9, j] for j in range(1, 10)])
    assert approx_poly_dp_open(corner, 2.0).tolist() == [[0, 0], [9, 0], [9, 9]]


def test_hce_equals_opencv_412_reference_on_random_pairs():
    data = np.load(FIX / "hce_random_opencv412.npz")
    keys = [k[3:] for k in data.files if k.startswith("hce")]
    assert len(keys) >= 20
    for k in keys:
        gt, pred = data[f"g{k}"], data[f"p{k}"]
        parts = hce_parts(pred > 128, gt, gt_skeleton(gt))
        assert sum(parts) == int(data[f"hce{k}"]), k


def test_hce_metric_and_skeleton_cache(tmp_path):
    rng = np.random.default_rng(3)
    gt = ndimage.gaussian_filter(rng.random((64, 64)), 3) > 0.5
    pred = (ndimage.gaussian_filter(gt.astype(float), 2) * 255).astype(np.uint8)
    plain = HumanCorrectionEffort()
    plain.update(torch.from_numpy(pred), torch.from_numpy(gt))
    cached = HumanCorrectionEffort(skeleton_cache=tmp_path / "ske")
    for _ in range(2):  # second pass reads the cache
        cached.update(torch.from_numpy(pred), torch.from_numpy(gt))
    assert len(list((tmp_path / "ske").glob("*.npy"))) == 1
    assert float(cached.compute()["hce"]) == float(plain.compute()["hce"])
    cache = SkeletonCache(tmp_path / "ske")
    assert np.array_equal(cache.get(gt), gt_skeleton(gt))


def test_hce_rejects_bad_options_and_shapes():
    with pytest.raises(ValueError, match="binarize"):
        HumanCorrectionEffort(binarize="otsu")
    with pytest.raises(ValueError, match="shapes differ"):
        hce_parts(np.zeros((4, 4), bool), np.zeros((4, 5), bool), np.zeros((4, 5), bool))
