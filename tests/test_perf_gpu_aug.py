"""Device-side augmentation (data.gpu_aug): equal to the CPU recipe for the same draw, same
distribution of draws; tested on the CPU device."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from salseg.data.gpu_aug import DeviceAugment, Draw, augment_batch, check_recipe, collate_raw
from salseg.data.transforms import build_recipe, normalize_hwc, resize_image, resize_mask

TOL = 1.0 / 255.0 + 1e-5


def _cpu_reference(recipe, image: np.ndarray, mask: np.ndarray, flip: bool, top: int, left: int):
    """The CPU pipeline's steps (SegTransform) with a fixed draw."""
    img = resize_image(image, recipe.size, recipe.image_interpolation, recipe.truncate_uint8)
    m = resize_mask(mask, recipe.size, recipe.mask_interpolation, recipe.truncate_uint8)
    if flip:
        axis = 0 if recipe.flip == "vertical" else 1
        img, m = np.flip(img, axis), np.flip(m, axis)
    if recipe.crop is not None:
        h, w = recipe.crop
        img, m = img[top:top + h, left:left + w], m[top:top + h, left:left + w]
    m = np.clip(m, 0, 1)
    if recipe.mask_norm == "max":
        peak = float(m.max())
        if 1e-6 <= peak < 1.0:
            m = m / peak
    return normalize_hwc(np.ascontiguousarray(img), recipe.spec, 255.0), m


def _sample(rng, h, w):
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    mask = (rng.random((h, w)) * 200).astype(np.uint8)  # soft, max < 255: tests label / max
    return image, mask


# the recipes compared with the CPU pipeline (also on CUDA: tests/test_cuda.py)
RECIPES = [{"name": "u2net_paper", "size": 40, "crop": 36}, {"name": "isnet_paper", "size": 48}]


@pytest.mark.parametrize("recipe_cfg", RECIPES)
def test_same_values_as_cpu_recipe_for_the_same_draw(recipe_cfg):
    recipe = build_recipe(recipe_cfg)
    rng = np.random.default_rng(0)
    samples = [_sample(rng, 57, 75), _sample(rng, 57, 75), _sample(rng, 57, 75)]
    images = torch.stack([torch.from_numpy(s[0]).permute(2, 0, 1) for s in samples])
    masks = torch.stack([torch.from_numpy(s[1])[None] for s in samples])
    aug = DeviceAugment(recipe, seed=0)
    crop_room = 0 if recipe.crop is None else recipe.size[0] - recipe.crop[0] - 1
    draw = Draw(flip=torch.tensor([True, False, True]), top=torch.tensor([0, crop_room, 1]),
                left=torch.tensor([crop_room, 2, 0]))
    got_img, got_mask = aug(images, masks, draw)
    for i, (image, mask) in enumerate(samples):
        ref_img, ref_mask = _cpu_reference(recipe, image, mask, bool(draw.flip[i]),
                                           int(draw.top[i]), int(draw.left[i]))
        assert got_img[i].shape == ref_img.shape
        assert (got_img[i] - torch.from_numpy(ref_img)).abs().max().item() <= TOL
        assert (got_mask[i, 0] - torch.from_numpy(np.ascontiguousarray(ref_mask))).abs().max() <= TOL


def test_differently_sized_native_images_are_resized_one_by_one():
    recipe = build_recipe({"name": "u2net_paper", "size": 32, "crop": 28})
    rng = np.random.default_rng(1)
    samples = [_sample(rng, 40, 50), _sample(rng, 61, 33)]
    batch = collate_raw([{"image": torch.from_numpy(im).permute(2, 0, 1).contiguous(),
                          "mask": torch.from_numpy(m)[None], "path": f"p{i}"}
                         for i, (im, m) in enumerate(samples)])
    assert isinstance(batch["image"], list)
    out = augment_batch(DeviceAugment(recipe, seed=3), batch)
    assert out["image"].shape == (2, 3, 28, 28) and out["mask"].shape == (2, 1, 28, 28)
    assert out["image"].dtype == torch.float32 and "raw" not in out
    assert float(out["mask"].max()) == pytest.approx(1.0)  # label / max(label)


def test_draws_follow_the_recipe_distribution():
    recipe = build_recipe({"name": "u2net_paper"})  # 320 -> 288, official offsets 0..31
    aug = DeviceAugment(recipe, seed=0)
    draws = [aug.draw(64) for _ in range(40)]
    top = torch.cat([d.top for d in draws])
    flip = torch.cat([d.flip for d in draws]).float()
    assert int(top.min()) == 0 and int(top.max()) == 31  # 32 never drawn (official randint)
    assert abs(flip.mean().item() - 0.5) < 0.05
    uniform = DeviceAugment(build_recipe({"name": "u2net_paper", "crop_offsets": "uniform"}))
    assert int(torch.cat([uniform.draw(64).left for _ in range(40)]).max()) == 32
    isnet = DeviceAugment(build_recipe("isnet_paper")).draw(8)
    assert int(isnet.top.abs().sum()) == 0  # no crop


def test_draw_stream_depends_on_seed_and_rank():
    recipe = build_recipe("u2net_paper")
    a, b = DeviceAugment(recipe, seed=0).draw(16), DeviceAugment(recipe, seed=0).draw(16)
    c = DeviceAugment(recipe, seed=0, rank=1).draw(16)
    assert torch.equal(a.top, b.top) and not torch.equal(a.top, c.top)


def test_strong_recipe_is_refused():
    with pytest.raises(ValueError, match="gpu_aug"):
        check_recipe(build_recipe("strong"))


def test_datamodule_gpu_aug_ships_uint8_and_augments_after_transfer(tmp_path):
    from salseg.data.datamodule import SegDataModule

    dm = SegDataModule(name="synthetic", root=str(tmp_path),
                       train=[{"kind": "synthetic", "split": "train"}], val=[],
                       aug={"name": "u2net_paper", "size": 64, "crop": 56}, batch_size=4,
                       synthetic={"n_train": 8, "n_val": 2, "size": 80}, verbose=False,
                       gpu_aug=True)
    dm.prepare_data()
    dm.setup("fit")
    raw = next(iter(dm.train_dataloader()))
    assert raw["image"].dtype == torch.uint8 and raw["image"].shape == (4, 3, 80, 80)
    assert raw["mask"].dtype == torch.uint8 and raw["mask"].shape == (4, 1, 80, 80)
    out = dm.on_after_batch_transfer(raw, 0)
    assert set(out) == {"image", "mask", "path"}
    assert out["image"].shape == (4, 3, 56, 56) and out["image"].dtype == torch.float32
    assert out["mask"].shape == (4, 1, 56, 56) and 0 <= out["mask"].min() <= out["mask"].max() <= 1
    plain = {"image": torch.zeros(1), "mask": torch.zeros(1)}  # validation batches pass through
    assert dm.on_after_batch_transfer(plain, 0) is plain


def test_gray_flag_uses_the_cards_grayscale_rule_like_the_cpu_pipeline():
    recipe = build_recipe({"name": "u2net_paper", "size": 32, "crop": 28})
    rng = np.random.default_rng(2)
    gray = rng.integers(0, 256, (40, 40), dtype=np.uint8)
    image = np.repeat(gray[..., None], 3, axis=2)
    mask = (rng.random((40, 40)) * 255).astype(np.uint8)
    draw = Draw(flip=torch.tensor([False]), top=torch.tensor([1]), left=torch.tensor([2]))
    got, _ = DeviceAugment(recipe)(torch.from_numpy(image).permute(2, 0, 1)[None],
                                   torch.from_numpy(mask)[None, None], draw,
                                   is_gray=torch.tensor([True]))
    img = resize_image(image, recipe.size, recipe.image_interpolation)[1:29, 2:30]
    ref = normalize_hwc(np.ascontiguousarray(img), recipe.spec, 255.0, True)
    assert (got[0] - torch.from_numpy(ref)).abs().max().item() <= TOL
    plain, _ = DeviceAugment(recipe)(torch.from_numpy(image).permute(2, 0, 1)[None],
                                     torch.from_numpy(mask)[None, None], draw)
    assert not torch.allclose(plain[0, 1], got[0, 1])  # G channel: R statistics vs its own
