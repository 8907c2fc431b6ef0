"""Python API of prediction: input types, weights sources, official pre/post-processing."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fixtures.predict.helpers import object_image, random_model, save, single_thread  # noqa: F401
from PIL import Image
from skimage.transform import resize as sk_resize

from salseg.models.preprocess import Preprocessor
from salseg.models.restore import minmax, restore_alpha, to_uint8
from salseg.models.weights import WeightsError, save_state_dict
from salseg.predict import Predictor, RefineOptions
from salseg.predict.backends import check_precision, resolve_device


@pytest.fixture(scope="module")
def model():
    return random_model("u2netp", seed=1)


@pytest.fixture(scope="module")
def predictor(model):
    return Predictor(model, model="u2netp", input_size=64, device="cpu")


def test_input_types_give_the_same_mask(predictor, tmp_path):
    img = object_image(70, 90)
    path = save(img, tmp_path / "a.png")
    from_array = predictor.predict(img)
    assert from_array.dtype == np.uint8 and from_array.shape == (70, 90)
    np.testing.assert_array_equal(predictor.predict(Image.fromarray(img)), from_array)
    np.testing.assert_array_equal(predictor.predict(path), from_array)
    np.testing.assert_array_equal(predictor.predict(str(path)), from_array)
    chw = torch.from_numpy(img).permute(2, 0, 1)
    np.testing.assert_array_equal(predictor.predict(chw), from_array)  # uint8 tensor
    np.testing.assert_array_equal(predictor.predict(chw.float() / 255), from_array)
    np.testing.assert_array_equal(predictor.predict(img.astype(np.float32) / 255), from_array)
    # grayscale and RGBA inputs are accepted (replicated / alpha dropped)
    assert predictor.predict(img[..., 0]).shape == (70, 90)
    rgba = np.concatenate([img, np.full((70, 90, 1), 7, np.uint8)], axis=2)
    np.testing.assert_array_equal(predictor.predict(rgba), from_array)
    with pytest.raises(TypeError):
        predictor.predict(12)
    with pytest.raises(ValueError):
        predictor.predict(np.zeros((4, 5, 2), np.uint8))


def test_batch_equals_single(predictor):
    images = [object_image(70, 90, seed=s) for s in range(3)] + [object_image(50, 40)]
    batch = predictor.predict_batch(images)
    for img, mask in zip(images, batch):
        single = predictor.predict(img)
        assert mask.shape == single.shape
        # batched convolutions round differently; the 8-bit truncation may flip a level
        assert np.abs(mask.astype(int) - single).max() <= 1
        assert (mask == single).mean() > 0.99


def test_u2net_official_pipeline(model, predictor):
    """skimage resize (no anti-aliasing), /max, ImageNet; fused map; min-max at 64; 8-bit
    truncation; PIL bilinear back to the original size."""
    img = object_image(70, 90)
    x = sk_resize(img, (64, 64), order=1, mode="constant", anti_aliasing=False)
    x = x / x.max()
    x = (x - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    inp = torch.from_numpy(x.transpose(2, 0, 1)[None]).float()
    torch.testing.assert_close(predictor.prepare(img)[None], inp, atol=1e-6, rtol=0)
    with torch.no_grad():
        fused = torch.sigmoid(model(inp)[0])[0, 0]
    norm = (fused - fused.min()) / (fused.max() - fused.min())
    q = Image.fromarray((norm.numpy() * 255).astype(np.uint8)).resize((90, 70), Image.BILINEAR)
    got = predictor.predict(img)
    assert np.abs(got.astype(int) - np.asarray(q, dtype=int)).max() <= 1
    assert (got == np.asarray(q)).mean() > 0.99


def test_isnet_official_preprocessing_and_restore():
    """F.interpolate bilinear -> uint8 truncation -> /255 -> mean 0.5; side 1 upsampled then
    min-max."""
    img = object_image(70, 90)
    pre = Preprocessor("isnet", input_size=(48, 40))
    t = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    expected = F.interpolate(t, (48, 40), mode="bilinear").type(torch.uint8) / 255.0 - 0.5
    torch.testing.assert_close(pre(img)[None], expected, atol=0, rtol=0)
    prob = torch.rand(48, 40)
    up = F.interpolate(prob[None, None], (70, 90), mode="bilinear")[0, 0]
    ref = ((up - up.min()) / (up.max() - up.min()) * 255).numpy().astype(np.uint8)
    np.testing.assert_array_equal(to_uint8(restore_alpha(prob, (70, 90), "isnet")), ref)


def test_isnet_predictor_small():
    p = Predictor(random_model("isnet", seed=2), model="isnet", input_size=64)
    mask = p.predict(object_image(50, 60))
    assert mask.shape == (50, 60) and mask.min() == 0 and mask.max() == 255


def test_raw_sigmoid_and_minmax(model):
    img = object_image(64, 64)
    raw = Predictor(model, model="u2netp", input_size=64, normalization="sigmoid")
    alpha = raw.predict_alpha(img)
    with torch.no_grad():
        fused = torch.sigmoid(model(raw.prepare(img)[None])[0])[0, 0].numpy()
    np.testing.assert_allclose(alpha, np.floor(fused * 255) / 255, atol=1e-6)
    mm = Predictor(model, model="u2netp", input_size=64).predict_alpha(img)
    assert mm.min() == 0.0 and mm.max() == 1.0
    assert torch.equal(minmax(torch.full((3, 3), 0.7)), torch.zeros(3, 3))


def test_refine_options_are_applied(model):
    p = Predictor(model, model="u2netp", input_size=64,
                  refine_options=RefineOptions(threshold=0.5))
    mask = p.predict(object_image())
    assert set(np.unique(mask)) <= {0, 255}


def test_weights_sources_and_guessing(model, tmp_path):
    img = object_image(64, 64)
    ref = Predictor(model, model="u2netp", input_size=64).predict(img)
    pth = save_state_dict(model, tmp_path / "w.pth")
    st = save_state_dict(model, tmp_path / "w.safetensors")
    for weights in (pth, st, model.state_dict()):
        np.testing.assert_array_equal(Predictor(weights, input_size=64).predict(img), ref)
    guessed = Predictor(pth, input_size=64)
    assert guessed.name == "u2netp"
    with pytest.raises(WeightsError, match="u2netp"):
        Predictor(pth, model="u2net")
    with pytest.raises(WeightsError, match="not found"):
        Predictor(tmp_path / "missing.pth", model="u2netp")
    with pytest.raises(ValueError, match="model=<name>"):
        Predictor(None)


def test_device_and_precision_rules(model, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="fp16"):
        check_precision("fp16", torch.device("cpu"))
    with pytest.raises(ValueError, match="precision"):
        check_precision("int8", torch.device("cpu"))
    bf16 = Predictor(model, model="u2netp", input_size=64, precision="bf16").predict_alpha(
        object_image(64, 64))
    fp32 = Predictor(model, model="u2netp", input_size=64).predict_alpha(object_image(64, 64))
    assert np.abs(bf16 - fp32).mean() < 0.05


def test_gt_encoder_cannot_predict():
    with pytest.raises(ValueError, match="masks"):
        Preprocessor("isnet_gt_encoder")
