"""salseg models against the official U-2-Net / DIS outputs (tests/fixtures/parity)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from parity_helpers import NAMES, deterministic_state_dict, fixture, manifest

from salseg.models import create_model, official_flat

EVAL_ATOL, TRAIN_ATOL, BUFFER_ATOL = 1e-4, 5e-3, 1e-4
OUTPUT_NAMES = {
    "u2net": ["fused"] + [f"side{i}" for i in range(1, 7)],
    "u2netp": ["fused"] + [f"side{i}" for i in range(1, 7)],
    "isnetdis": [f"side{i}" for i in range(1, 7)] + [f"feat{i}" for i in range(1, 7)],
    "isnet_gt_encoder": [f"side{i}" for i in range(1, 7)] + [f"feat{i}" for i in range(1, 7)],
}
# U2-Net (44M) is covered by the slow suite; its manifest/strict-load check stays fast.
FAST = ["u2netp", "isnetdis", "isnet_gt_encoder"]
ALL = ["u2net", *FAST]


def _model(fixture_name: str) -> torch.nn.Module:
    model = create_model(NAMES[fixture_name])
    model.load_state_dict(deterministic_state_dict(fixture_name), strict=True)
    return model


@pytest.mark.parametrize("fixture_name", ALL)
def test_state_dict_matches_official_manifest(fixture_name):
    man = manifest(fixture_name)
    with torch.device("meta"):
        model = create_model(NAMES[fixture_name])
    ours = [[k, list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in model.state_dict().items()]
    assert ours == [list(e) for e in man["tensors"]]  # keys, shapes, dtypes and order
    assert sum(p.numel() for p in model.parameters()) == man["num_parameters"]


@pytest.mark.parametrize("fixture_name", ALL)
def test_official_weights_load_strict(fixture_name):
    model = create_model(NAMES[fixture_name])
    result = model.load_state_dict(deterministic_state_dict(fixture_name), strict=True)
    assert not result.missing_keys and not result.unexpected_keys


def _check_eval(fixture_name):
    fx = fixture(fixture_name)
    model = _model(fixture_name).eval()
    with torch.no_grad():
        outs = official_flat(NAMES[fixture_name], model(torch.from_numpy(fx["input"])))
    names = OUTPUT_NAMES[fixture_name]
    assert len(outs) == len(names)
    for name, out in zip(names, outs):
        ref = fx[name]
        assert tuple(out.shape) == ref.shape, name
        np.testing.assert_allclose(out.numpy(), ref, atol=EVAL_ATOL, rtol=0, err_msg=name)


@pytest.mark.parametrize("fixture_name", FAST)
def test_eval_outputs_match_official(fixture_name):
    _check_eval(fixture_name)


@pytest.mark.slow
def test_eval_outputs_match_official_u2net():
    _check_eval("u2net")


@pytest.mark.parametrize("fixture_name", FAST)
def test_train_mode_outputs_match_official(fixture_name):
    fx = fixture(fixture_name)
    model = _model(fixture_name).train()
    out = official_flat(NAMES[fixture_name], model(torch.from_numpy(fx["train_input"])))
    sides = out[:7] if fixture_name == "u2netp" else out[:6]
    names = OUTPUT_NAMES[fixture_name][: len(sides)]
    for name, got in zip(names, sides):
        np.testing.assert_allclose(got.detach().numpy(), fx[f"train_{name}"], atol=TRAIN_ATOL, rtol=0,
                                   err_msg=name)
    if fixture_name == "u2netp":  # BatchNorm running statistics after one train() forward
        state = model.state_dict()
        buffers = [k for k in fx if k.startswith("train_buffer.")]
        assert buffers
        for key in buffers:
            np.testing.assert_allclose(state[key.removeprefix("train_buffer.")].numpy(), fx[key],
                                       atol=BUFFER_ATOL, rtol=0, err_msg=key)


@pytest.mark.parametrize("name,shape", [("u2netp", (1, 3, 33, 47)), ("isnet_gt_encoder", (2, 1, 35, 21))])
def test_any_input_size_returns_input_size(name, shape):
    model = create_model(name).eval()
    with torch.no_grad():
        out = model(torch.randn(shape))
    maps = out if name == "u2netp" else out[0]
    assert all(tuple(m.shape) == (shape[0], 1, *shape[2:]) for m in maps)


@pytest.mark.slow
def test_isnet_odd_non_square_input():
    model = create_model("isnet").eval()
    with torch.no_grad():
        sides, feats = model(torch.randn(1, 3, 37, 53))
    assert [tuple(s.shape) for s in sides] == [(1, 1, 37, 53)] * 6
    assert [f.shape[1] for f in feats] == [64, 64, 128, 256, 512, 512]
