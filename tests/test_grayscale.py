"""Grayscale images are normalised like the official U2-Net (issue 9.1): a single-channel image is
kept as H x W x 1 by the official loader and ``ToTensorLab(flag=0)`` normalises **all three**
output channels with the R statistics ``(x - 0.485) / 0.229``.  Checked for prediction (files,
PIL and NumPy inputs), salseg-predict's and eval model mode's decoders, and the training /
validation transform; IS-Net (equal statistics on every channel) is unchanged."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from fixtures.predict.helpers import random_model, save, single_thread  # noqa: F401
from PIL import Image

from salseg.data.datasets import SegDataset
from salseg.data.sources import Pair
from salseg.data.transforms import build_recipe
from salseg.evaluation.model import decode_pair
from salseg.models.preprocess import Preprocessor
from salseg.predict.batch import FileDecoder
from salseg.predict.inputs import InputItem
from salseg.predict.loop import _Decode
from salseg.predict.predictor import Predictor

SIZE = (40, 56)


def official_u2net_gray(gray: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Test-local copy of the official gray path: ``image[:, :, np.newaxis]``, scikit-image
    resize (bilinear, mode constant, no anti-aliasing as in 0.14), ``/ max``, R statistics on
    all three channels.  Returns ``(3, h, w)`` float64."""
    from skimage.transform import resize

    im = resize(gray[:, :, np.newaxis], size, mode="constant", order=1, anti_aliasing=False)
    im = im / np.max(im)
    out = np.zeros((size[0], size[1], 3))
    for c in range(3):
        out[:, :, c] = (im[:, :, 0] - 0.485) / 0.229
    return out.transpose(2, 0, 1)


def per_channel(gray: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The old behaviour: replicate, then each channel's own ImageNet statistics."""
    from skimage.transform import resize

    im = resize(np.repeat(gray[:, :, None], 3, axis=2), size, mode="constant", order=1,
                anti_aliasing=False)
    im = im / np.max(im)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    return ((im - mean) / std).transpose(2, 0, 1)


@pytest.fixture(scope="module")
def gray_image() -> np.ndarray:
    rng = np.random.default_rng(3)
    img = (rng.random((70, 90)) * 150).astype(np.uint8)
    img[20:50, 30:70] = 220
    return img


@pytest.fixture
def recorded():
    """A U2-NetP predictor whose model inputs are recorded."""
    p = Predictor(random_model("u2netp", seed=1), model="u2netp", input_size=SIZE)
    seen: list[torch.Tensor] = []
    infer = p.infer

    def spy(batch):
        seen.append(batch.clone())
        return infer(batch)

    p.infer = spy
    return p, seen


def test_predict_gray_inputs_follow_the_official_path(recorded, gray_image, tmp_path):
    p, seen = recorded
    ref = official_u2net_gray(gray_image, SIZE)
    path = save(gray_image, tmp_path / "g.png")
    assert Image.open(path).mode == "L"
    for source in (path, Image.fromarray(gray_image), gray_image, gray_image[..., None]):
        p.predict(source)
        np.testing.assert_allclose(seen[-1][0].double().numpy(), ref, atol=1e-5, rtol=0)
    # an RGB image is untouched by the gray rule
    rgb = np.repeat(gray_image[..., None], 3, axis=2)
    p.predict(rgb)
    np.testing.assert_allclose(seen[-1][0].double().numpy(), per_channel(gray_image, SIZE),
                               atol=1e-5, rtol=0)
    assert not np.allclose(per_channel(gray_image, SIZE), ref, atol=1e-2)  # the test can fail


def test_salseg_predict_and_eval_decoders_carry_gray(gray_image, tmp_path):
    path = save(gray_image, tmp_path / "g.png")
    ref = official_u2net_gray(gray_image, SIZE)
    p = Predictor(random_model("u2netp", seed=1), model="u2netp", input_size=SIZE)
    sample = _Decode([InputItem(path, "g")], FileDecoder(), p.prepare, keep_image=False)[0]
    assert sample["error"] is None
    np.testing.assert_allclose(sample["input"].double().numpy(), ref, atol=1e-5, rtol=0)
    x = _Decode([Pair(str(path), str(path), "g")], decode_pair, p.prepare, False)[0]["input"]
    np.testing.assert_allclose(x.double().numpy(), ref, atol=1e-5, rtol=0)


def test_per_channel_is_a_named_option(gray_image):
    pre = Preprocessor("u2netp", input_size=SIZE)
    rgb = np.repeat(gray_image[..., None], 3, axis=2)
    legacy = Preprocessor(replace(pre.preprocessing, gray="per_channel"))
    np.testing.assert_allclose(legacy(rgb, gray=True).double().numpy(),
                               per_channel(gray_image, SIZE), atol=1e-5, rtol=0)


def test_isnet_gray_is_unchanged(gray_image):
    pre = Preprocessor("isnet", input_size=SIZE)
    rgb = np.repeat(gray_image[..., None], 3, axis=2)
    assert torch.equal(pre(rgb, gray=True), pre(rgb, gray=False))


@pytest.mark.parametrize("train", [False, True])
def test_training_transform_gray_follows_the_official_path(gray_image, tmp_path, train):
    img = save(gray_image, tmp_path / "g.png")
    mask = save((gray_image > 200).astype(np.uint8) * 255, tmp_path / "m.png")
    recipe = build_recipe({"name": "u2net_paper", "size": list(SIZE), "crop": None,
                           "flip": "none"})
    ds = SegDataset([Pair(str(img), str(mask), "g")], recipe, train=train)
    x = ds[0]["image"].double().numpy()
    # the training resize is OpenCV's float32 bilinear (equal to scikit-image's to rounding)
    np.testing.assert_allclose(x, official_u2net_gray(gray_image, SIZE), atol=1e-4, rtol=0)
    rgb = save(np.repeat(gray_image[..., None], 3, axis=2), tmp_path / "rgb.png")
    x_rgb = SegDataset([Pair(str(rgb), str(mask), "g")], recipe, train=train)[0]["image"]
    np.testing.assert_allclose(x_rgb.double().numpy(), per_channel(gray_image, SIZE),
                               atol=1e-4, rtol=0)
