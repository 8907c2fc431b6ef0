"""Recipes: shapes, value ranges, flip direction, crop offsets, resize fidelity, normalisation."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage.transform import resize as sk_resize

from salseg.data.transforms import (
    RECIPES,
    SegTransform,
    build_recipe,
    official_crop_offsets,
    resize_image,
    resize_mask,
)
from salseg.models.spec import IMAGENET_MEAN, IMAGENET_STD, get_spec


def _img(h=40, w=56, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _mask(h=40, w=56):
    m = np.zeros((h, w), np.float32)
    m[h // 4: 3 * h // 4, w // 5: w // 2] = 1.0
    return m


@pytest.mark.parametrize("name", list(RECIPES))
def test_recipe_shapes_and_ranges(name):
    r = build_recipe({"name": name, "size": 64, **({"crop": 56} if name == "u2net_paper" else {})})
    img, m = _img(), _mask()
    tr = SegTransform(r, train=True, seed=0)(img, m)
    ev = SegTransform(r, train=False)(img, m)
    h = 56 if name == "u2net_paper" else 64
    assert tr["image"].shape == (3, h, h) and tr["mask"].shape == (1, h, h)
    assert ev["image"].shape == (3, 64, 64) and ev["mask"].shape == (1, 64, 64)
    for out in (tr, ev):
        assert out["image"].dtype == torch.float32 and out["mask"].dtype == torch.float32
        assert 0.0 <= float(out["mask"].min()) and float(out["mask"].max()) <= 1.0
    if r.normalization == "isnet":
        assert -0.5 - 1e-6 <= float(ev["image"].min()) and float(ev["image"].max()) <= 0.5 + 1e-6
    else:
        lo = min((0 - m_) / s for m_, s in zip(IMAGENET_MEAN, IMAGENET_STD))
        hi = max((1 - m_) / s for m_, s in zip(IMAGENET_MEAN, IMAGENET_STD))
        assert lo - 1e-5 <= float(ev["image"].min()) and float(ev["image"].max()) <= hi + 1e-5


def test_paper_defaults():
    u, i = RECIPES["u2net_paper"], RECIPES["isnet_paper"]
    assert (u.size, u.crop, u.flip, u.mask_interpolation, u.mask_norm) == (
        (320, 320), (288, 288), "vertical", "nearest", "max")
    assert u.input_size == (320, 320) and u.train_size == (288, 288)
    assert (i.size, i.crop, i.flip, i.mask_interpolation, i.truncate_uint8) == (
        (1024, 1024), None, "horizontal", "bilinear", True)


def test_u2net_normalisation_numbers():
    """Image / its own max, then ImageNet mean/std (official ToTensorLab flag=0)."""
    r = build_recipe({"name": "u2net_paper", "size": 8, "crop": None})
    img = np.zeros((8, 8, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 200, 100, 50
    out = SegTransform(r, train=False)(img, _mask(8, 8))["image"]
    exp = [(1.0 - 0.485) / 0.229, (0.5 - 0.456) / 0.224, (0.25 - 0.406) / 0.225]
    for c in range(3):
        np.testing.assert_allclose(out[c].numpy(), exp[c], rtol=1e-5, atol=1e-6)


def test_isnet_normalisation_numbers():
    r = build_recipe({"name": "isnet_paper", "size": 8})
    img = np.full((8, 8, 3), 51, np.uint8)
    out = SegTransform(r, train=False)(img, _mask(8, 8))["image"]
    np.testing.assert_allclose(out.numpy(), 51 / 255 - 0.5, atol=1e-6)


@pytest.mark.parametrize("name", ["u2net_paper", "isnet_paper"])
def test_normalisation_agrees_with_model_spec(name):
    r = build_recipe({"name": name, "size": 32, "crop": None})
    img = _img(50, 70)
    out = SegTransform(r, train=False)(img, _mask(50, 70))["image"]
    resized = resize_image(img, (32, 32), "bilinear", r.truncate_uint8)
    ref = get_spec(r.normalization).normalize(torch.from_numpy(resized).permute(2, 0, 1)[None])[0]
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def _flip_kinds(recipe_name, n=40):
    r = build_recipe({"name": recipe_name, "size": 16, "crop": None})
    t = SegTransform(r, train=True, seed=123)
    img = np.zeros((16, 16, 3), np.uint8)
    img[:4, :4] = 255  # bright top-left corner
    kinds = set()
    for _ in range(n):
        out = t(img, _mask(16, 16))["image"][0]
        bright = out > out.mean()
        ys, xs = np.nonzero(bright.numpy())
        top, left = ys.mean() < 8, xs.mean() < 8
        kinds.add({(True, True): "none", (False, True): "vertical", (True, False): "horizontal",
                   (False, False): "both"}[(top, left)])
    return kinds


def test_u2net_flip_is_vertical():
    assert _flip_kinds("u2net_paper") == {"none", "vertical"}


def test_isnet_flip_is_horizontal():
    assert _flip_kinds("isnet_paper") == {"none", "horizontal"}


def test_flip_moves_mask_with_image():
    r = build_recipe({"name": "isnet_paper", "size": 16})
    t = SegTransform(r, train=True, seed=5)
    m = np.zeros((16, 16), np.float32)
    m[:, :4] = 1.0
    img = np.repeat((m * 255).astype(np.uint8)[..., None], 3, axis=2)
    for _ in range(10):
        out = t(img, m)
        assert torch.equal(out["mask"][0] > 0.5, out["image"][0] > 0)


def _offsets(offsets, size, crop, n):
    r = build_recipe({"name": "u2net_paper", "size": size, "crop": crop, "flip": "none",
                      "mask_norm": "none", "crop_offsets": offsets})
    t = SegTransform(r, train=True, seed=7)
    rows = np.repeat(np.arange(size, dtype=np.float32)[:, None], size, axis=1) / (size - 1)
    img = np.zeros((size, size, 3), np.uint8)
    tops, lefts = set(), set()
    for _ in range(n):
        tops.add(int(round(float(t(img, rows)["mask"][0, 0, 0]) * (size - 1))))
        lefts.add(int(round(float(t(img, rows.T.copy())["mask"][0, 0, 0]) * (size - 1))))
    return tops, lefts


def test_official_crop_offsets_exclude_last_position():
    # through the whole pipeline (image and mask cropped at the same offsets)
    tops, lefts = _offsets("official", 40, 32, 150)
    assert tops == set(range(8)) and lefts == set(range(8))  # 0..7, never 8
    # the 320 -> 288 case of the paper: 0..31, never 32
    from salseg.data.transforms import PaperRandomCrop

    crop = PaperRandomCrop(288, 288, "official")
    crop.set_random_seed(0)
    seen = {tuple(crop.get_params_dependent_on_data({"shape": (320, 320, 3)}, {}).values())
            for _ in range(2000)}
    assert {t for t, _ in seen} == set(range(32)) and {left for _, left in seen} == set(range(32))
    assert list(official_crop_offsets(320, 288)) == list(range(32))


def test_uniform_crop_offsets_include_last_position():
    tops, lefts = _offsets("uniform", 24, 16, 200)
    assert tops == set(range(9)) and lefts == set(range(9))


def test_u2net_resize_matches_skimage_without_antialias():
    img = _img(90, 120)
    ours = resize_image(img, (64, 48), "bilinear")
    ref = sk_resize(img, (64, 48), order=1, mode="constant", anti_aliasing=False) * 255
    np.testing.assert_allclose(ours[1:-1, 1:-1], ref[1:-1, 1:-1], atol=1e-3)
    m = (np.random.default_rng(1).random((90, 120)) > 0.5).astype(np.float32)
    ours_m = resize_mask(m, (64, 48), "nearest")
    ref_m = sk_resize(m, (64, 48), order=0, mode="constant", preserve_range=True,
                      anti_aliasing=False)
    np.testing.assert_array_equal(ours_m, ref_m)


def test_isnet_resize_matches_official_upsample_and_truncation():
    img = _img(90, 120)
    ours = resize_image(img, (64, 80), "bilinear", truncate=True)
    t = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    ref = F.interpolate(t, (64, 80), mode="bilinear", align_corners=False).type(torch.uint8)
    np.testing.assert_array_equal(ours, ref[0].permute(1, 2, 0).numpy().astype(np.float32))
    k = np.random.default_rng(2).integers(0, 256, (90, 120)).astype(np.float32)
    ours_m = resize_mask(k / 255, (64, 80), "bilinear", truncate=True) * 255
    ref_m = F.interpolate(torch.from_numpy(k)[None, None], (64, 80), mode="bilinear",
                          align_corners=False).type(torch.uint8)[0, 0].numpy()
    np.testing.assert_array_equal(np.rint(ours_m), ref_m)


def test_soft_masks_stay_soft_with_bilinear_and_hard_with_nearest():
    m = np.zeros((40, 40), np.float32)
    m[10:29, 11:30] = 1.0
    soft = SegTransform(build_recipe({"name": "isnet_paper", "size": 27}), False)(_img(40, 40), m)
    vals = soft["mask"].unique()
    assert ((vals > 0) & (vals < 1)).any()
    hard = SegTransform(build_recipe({"name": "u2net_paper", "size": 27, "crop": None}), False)(
        _img(40, 40), m)
    assert set(hard["mask"].unique().tolist()) <= {0.0, 1.0}


def test_u2net_mask_divided_by_its_max():
    m = _mask() * (128 / 255)
    out = SegTransform(build_recipe({"name": "u2net_paper", "size": 32, "crop": None}), False)(
        _img(), m)
    assert float(out["mask"].max()) == pytest.approx(1.0)
    out = SegTransform(build_recipe({"name": "isnet_paper", "size": 32}), False)(_img(), m)
    assert float(out["mask"].max()) == pytest.approx(128 / 255, abs=1 / 255)


def test_strong_geometry_keeps_mask_aligned():
    r = build_recipe({"name": "strong", "size": 48, "mask_interpolation": "nearest",
                      "strong": {"jitter_p": 0, "blur_p": 0, "noise_p": 0, "affine_p": 1.0}})
    t = SegTransform(r, train=True, seed=3)
    m = _mask(48, 48)
    img = np.repeat((m * 255).astype(np.uint8)[..., None], 3, axis=2)
    changed = 0
    for _ in range(8):
        out = t(img, m)
        fg_img = out["image"][0] > 0  # normalised: background negative, foreground positive
        fg_mask = out["mask"][0] > 0.5
        agree = (fg_img == fg_mask).float().mean().item()
        assert agree > 0.97
        changed += int(not torch.equal(fg_mask, torch.from_numpy(m > 0.5)))
    assert changed >= 6


def test_recipe_overrides_and_errors():
    r = build_recipe({"name": "u2net_paper", "size": 160, "crop": 144})
    assert r.size == (160, 160) and r.crop == (144, 144) and r.input_size == (160, 160)
    assert build_recipe({"name": "isnet_paper", "size": [96, 128]}).size == (96, 128)
    with pytest.raises(ValueError, match="aug.crop"):
        build_recipe({"name": "u2net_paper", "size": 160})
    with pytest.raises(ValueError, match="unknown aug option"):
        build_recipe({"name": "u2net_paper", "sise": 3})
    with pytest.raises(ValueError, match="unknown augmentation recipe"):
        build_recipe("fancy")
    assert build_recipe(None).name == "u2net_paper"
    assert build_recipe(None, default="isnet_paper").name == "isnet_paper"
    assert build_recipe({"name": "u2net_paper", "strong": {}}).strong == {}


@pytest.mark.parametrize("name", ["u2net", "u2netp", "isnet", "isnet_gt_encoder"])
def test_numpy_normalisation_twin_matches_model_spec(name):
    from salseg.data.transforms import normalize_hwc

    spec = get_spec(name)
    c = spec.in_channels
    x = np.random.default_rng(0).random((12, 10, c)).astype(np.float32) * 0.8
    ours = torch.from_numpy(normalize_hwc(x, spec))
    ref = spec.normalize(torch.from_numpy(x).permute(2, 0, 1)[None] * 255.0)[0]
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_a_complete_recipe_config_needs_no_entry_in_the_package(tmp_path):
    """A new architecture's augmentation recipe is one ``configs/aug/<name>.yaml`` composed from
    ``base/recipe`` (here from a config folder outside the package, on Hydra's search path):
    the datamodule ``train.py`` instantiates builds it without an entry in ``RECIPES``; an
    incomplete recipe under an unknown name is still refused, naming the missing fields."""
    from hydra.utils import instantiate
    from train_helpers import compose_train

    from salseg.config import CONFIG_DIR
    from salseg.data.transforms import RECIPES

    text = (CONFIG_DIR / "aug" / "isnet_paper.yaml").read_text()
    (tmp_path / "extra" / "aug").mkdir(parents=True)
    (tmp_path / "extra" / "aug" / "toy_paper.yaml").write_text(
        text.replace("name: isnet_paper", "name: toy_paper").replace("size: 1024", "size: 48"))
    cfg = compose_train(["data=synthetic", "aug=toy_paper",
                         f"hydra.searchpath=[file://{tmp_path / 'extra'}]"], tmp_path / "run")
    assert "toy_paper" not in RECIPES
    recipe = instantiate(cfg.data).recipe
    assert recipe.name == "toy_paper" and recipe.size == (48, 48)
    assert recipe.flip == "horizontal" and recipe.truncate_uint8 and recipe.mask_norm == "none"
    with pytest.raises(ValueError, match=r"unknown augmentation recipe 'toy_paper'.*missing"):
        build_recipe({"name": "toy_paper", "size": 48})
