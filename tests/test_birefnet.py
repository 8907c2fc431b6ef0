"""BiRefNet (Swin-T ``birefnet_lite``, Swin-L ``birefnet``) against the official outputs
(tests/fixtures/parity/birefnet_*: subsets of the official parity fixtures, see the README there).

Fast: state dict = official manifest (both), the fill digest, Swin-T eval logits on the 32x32 and
64x64 inputs, the debug intermediates, the gradient labels not detached, prefixed checkpoints,
the official pre-/post-processing.  Slow: the non-square input, the train() forward at 256x256
(maps, BatchNorm buffers, label gradients), Swin-L, activation checkpointing.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from parity_helpers import (
    FIXTURES,
    deterministic_state_dict,
    fixture,
    manifest,
    state_dict_digest,
)

from salseg.models import create_model, get_card
from salseg.models.birefnet import BiRefNet, laplacian, postprocess, preprocess

EVAL_ATOL, TRAIN_ATOL, BUFFER_ATOL, GRAD_RTOL = 1e-4, 3e-3, 1e-4, 2e-2
FIXTURE = {"birefnet_lite": "birefnet_swin_v1_t", "birefnet": "birefnet_swin_v1_l"}
# the digest of the filled weights the official fixtures were made with (their meta.digest)
DIGEST_T = "220075a3bdf59109b279bd4d9d8153a8db50f1d6fbc0cf5068908ab7fb48b76b"


def _model(name: str, state_dict=None) -> BiRefNet:
    torch.manual_seed(0)
    model = create_model(name)
    model.load_state_dict(state_dict or deterministic_state_dict(FIXTURE[name]), strict=True)
    return model


@pytest.fixture(scope="module")
def sd_t():
    return deterministic_state_dict("birefnet_swin_v1_t")


@pytest.fixture(scope="module")
def lite(sd_t) -> BiRefNet:
    return _model("birefnet_lite", sd_t).eval()


@pytest.fixture(scope="module")
def fx_t() -> dict[str, np.ndarray]:
    return fixture("birefnet_swin_v1_t")


def _close(got: torch.Tensor, ref: np.ndarray, atol: float, what: str) -> None:
    assert tuple(got.shape) == ref.shape, what
    np.testing.assert_allclose(got.detach().numpy(), ref, atol=atol, rtol=0, err_msg=what)


@pytest.mark.parametrize("name", ["birefnet_lite", "birefnet"])
def test_state_dict_matches_official_manifest(name):
    man = manifest(FIXTURE[name])
    with torch.device("meta"):
        model = create_model(name)
    ours = [[k, list(v.shape), str(v.dtype).removeprefix("torch.")]
            for k, v in model.state_dict().items()]
    assert ours == [list(e) for e in man["tensors"]]  # keys, shapes, dtypes and order
    assert sum(p.numel() for p in model.parameters()) == man["num_parameters"]
    assert sum(p.numel() for p in model.bb.parameters()) == man["num_parameters_backbone"]


def test_fill_rule_reproduces_the_fixture_weights(sd_t):
    assert state_dict_digest(sd_t) == DIGEST_T


def test_relative_position_index_equals_the_official_buffer(sd_t):
    from salseg.models.backbones.swin import SwinTransformer

    fresh = SwinTransformer("swin_v1_t").state_dict()
    keys = [k for k in sd_t if k.endswith("relative_position_index")]
    assert len(keys) == 12
    for k in keys:
        assert torch.equal(fresh[k[len("bb."):]], sd_t[k]), k


@pytest.mark.parametrize("inp,ref", [("input_min", "eval_logits_min"),
                                     ("input_small", "small.logits")])
def test_eval_logits_match_official(lite, fx_t, inp, ref):
    with torch.no_grad():
        out = lite(torch.from_numpy(fx_t[inp]))
    assert isinstance(out, list) and len(out) == 1
    _close(out[0], fx_t[ref], EVAL_ATOL, ref)
    assert get_card("birefnet_lite").outputs(out).prediction is out[0]


def test_debug_intermediates_match_official(lite, fx_t):
    rec, bb_calls, hooks = {}, [], []
    mods = dict(lite.named_modules())
    hooks.append(lite.bb.register_forward_hook(lambda m, i, o: bb_calls.append(o)))
    keys = [k for k in fx_t if k.startswith("small.decoder.") or k == "small.squeeze"]
    for key in keys:
        mod = mods["squeeze_module" if key == "small.squeeze" else key[len("small."):]]
        hooks.append(mod.register_forward_hook(
            lambda m, i, o, key=key: rec.__setitem__(key, o)))
    plain = lite.forward_enc

    def forward_enc(x):
        out = plain(x)
        rec.update({f"small.enc.{k}": t for k, t in enumerate(out[0]) if k})
        return out

    lite.forward_enc = forward_enc
    try:
        with torch.no_grad():
            lite(torch.from_numpy(fx_t["input_small"]))
    finally:
        del lite.forward_enc
        for h in hooks:
            h.remove()
    for tag, outs in zip(("bb_full", "bb_half"), bb_calls[:2]):
        rec.update({f"small.{tag}.{k}": t for k, t in enumerate(outs)})
    wanted = sorted(k for k in fx_t if k.startswith("small.") and k != "small.logits")
    assert len(wanted) == 25 and set(wanted) <= set(rec)
    for key in wanted:
        _close(rec[key], fx_t[key], EVAL_ATOL, key)


def test_input_size_must_be_a_multiple_of_32(lite):
    with pytest.raises(ValueError, match="divisible by 32"):
        lite(torch.zeros(1, 3, 48, 64))


def test_laplacian_is_normalised_with_reflect_border():
    x = torch.randn(1, 1, 9, 11, dtype=torch.float64)
    padded = F.pad(x, (2, 2, 2, 2), mode="reflect")
    box = F.avg_pool2d(padded, 5, stride=1) * 25
    assert torch.allclose(laplacian(x), (box - 25 * x) / 48, atol=1e-12)


def test_gradient_labels_are_not_detached():
    """d sum(label_k * r_k) / d m_k = up^T(gdt_gt * r_k): the labels carry the side maps'
    gradient (the official code does not detach them)."""
    torch.manual_seed(0)
    model = BiRefNet("swin_v1_t").train()
    x = torch.randn(2, 3, 32, 32)
    (preds_gdt, labels), preds = model(x)[0]
    gen = torch.Generator().manual_seed(3)
    rs = [torch.randn(lab.shape, generator=gen) for lab in labels]
    grads = torch.autograd.grad(sum((lab * r).sum() for lab, r in zip(labels, rs)), preds[:3])
    gt = laplacian(x.mean(1, keepdim=True))
    for m, r, g in zip(preds[:3], rs, grads):
        probe = m.detach().clone().requires_grad_(True)
        up = F.interpolate(probe, size=(32, 32), mode="bilinear", align_corners=True)
        (expected,) = torch.autograd.grad((gt.detach() * up * r).sum(), probe)
        assert g.abs().max() > 0
        torch.testing.assert_close(g, expected, atol=1e-5, rtol=1e-4)


def test_prefixed_official_checkpoint_loads_strictly(tmp_path, sd_t):
    from salseg.weights.load import load_weights

    sd = sd_t
    path = tmp_path / "BiRefNet_lite-compiled.pth"
    torch.save({f"module._orig_mod.{k}": v for k, v in sd.items()}, path)
    model = create_model("birefnet_lite")
    load_weights(model, path, "birefnet_lite")
    got = model.state_dict()
    assert all(torch.equal(got[k], v) for k, v in sd.items())


@pytest.mark.parametrize("pipeline", ["repo", "card"])
def test_official_pre_and_postprocessing(pipeline):
    with np.load(FIXTURES / "birefnet_preproc.npz") as z:
        data = {k: z[k] for k in z.files}
    import json

    meta = json.loads(str(data["meta"]))
    for tag in ("down", "up"):
        got = preprocess(data["image"].copy(), tuple(meta[f"size_{tag}"]), pipeline)
        _close(got, data[f"{pipeline}_input_{tag}"], 1e-6, f"{pipeline} {tag}")
    mask = postprocess(torch.from_numpy(data["logits"]), tuple(meta["original_hw"]), pipeline)
    assert mask.dtype == np.uint8
    diff = np.abs(mask.astype(int) - data[f"{pipeline}_mask_u8"].astype(int)).max()
    assert diff <= 1


def test_train_outputs_read_by_the_card():
    torch.manual_seed(0)
    model = BiRefNet("swin_v1_t").train()
    with torch.no_grad():
        raw = model(torch.randn(2, 3, 32, 64))
    assert raw[1] == [None]
    out = get_card("birefnet_lite").outputs(raw)
    assert [tuple(s.shape) for s in out.sides] == [(2, 1, 32, 64)] * 4
    assert out.prediction is out.sides[-1] is raw[0][1][-1]
    assert [tuple(t.shape[-2:]) for t in out.aux["gdt_preds"]] == [(1, 2), (2, 4), (4, 8)]
    assert [tuple(t.shape[-2:]) for t in out.aux["gdt_labels"]] == [(32, 64)] * 3


# -- slow -------------------------------------------------------------------------------------
@pytest.mark.slow
def test_eval_logits_non_square(lite, fx_t):
    with torch.no_grad():
        out = lite(torch.from_numpy(fx_t["input_nonsquare"]))
    _close(out[0], fx_t["eval_logits_nonsquare"], EVAL_ATOL, "nonsquare")


def _disable_stochastic(model: torch.nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
        if hasattr(m, "drop_prob"):
            m.drop_prob = 0.0


@pytest.mark.slow
def test_train_forward_matches_official():
    fx = fixture("birefnet_swin_v1_t_train")
    model = _model("birefnet_lite")
    _disable_stochastic(model)
    model.train()
    (gdt_preds, gdt_labels), preds = model(torch.from_numpy(fx["input"]))[0]
    for i, p in enumerate(preds):
        _close(p, fx[f"train_pred{i}"], TRAIN_ATOL, f"pred{i}")
    for i, (p, lab) in enumerate(zip(gdt_preds, gdt_labels)):
        _close(p, fx[f"train_gdt_pred{i}"], TRAIN_ATOL, f"gdt_pred{i}")
        _close(lab, fx[f"train_gdt_label{i}"], TRAIN_ATOL, f"gdt_label{i}")
    sd = model.state_dict()
    buffers = [k for k in fx if k.startswith("train_buffer.")]
    assert len(buffers) == 86
    for k in buffers:
        _close(sd[k[len("train_buffer."):]], fx[k], BUFFER_ATOL, k)
    # label VJP with the official directions (RandomState(1000 + k) normal, float32)
    rs = [torch.from_numpy(np.random.RandomState(1000 + k).standard_normal(lab.shape)
                           .astype(np.float32)) for k, lab in enumerate(gdt_labels)]
    grads = torch.autograd.grad(sum((lab * r).sum() for lab, r in zip(gdt_labels, rs)),
                                preds[:3])
    for k, g in enumerate(grads):
        ref = fx[f"train_label_vjp{k}"]
        assert np.abs(g.numpy() - ref).max() <= GRAD_RTOL * np.abs(ref).max(), k


@pytest.mark.slow
def test_swin_l_eval_matches_official():
    fx = fixture("birefnet_swin_v1_l")
    model = _model("birefnet").eval()
    with torch.no_grad():
        for inp, ref in (("input_min", "eval_logits_min"), ("input_small", "small.logits")):
            _close(model(torch.from_numpy(fx[inp]))[0], fx[ref], EVAL_ATOL, ref)


@pytest.mark.slow
def test_activation_checkpointing_gives_the_same_step():
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    grads = []
    for flag in (False, True):
        model = _model("birefnet_lite")
        model.activation_checkpointing = flag
        _disable_stochastic(model)
        model.train()
        (gp, gl), preds = model(x)[0]
        loss = sum(p.float().square().mean() for p in preds) + sum(g.mean() for g in gp)
        loss.backward()
        grads.append({k: p.grad.clone() for k, p in model.named_parameters()
                      if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for k in grads[0]:
        torch.testing.assert_close(grads[1][k], grads[0][k], atol=1e-5, rtol=1e-4)


def test_training_option_checkpoints_the_swin_blocks():
    from salseg.models.checkpointing import enable_activation_checkpointing

    model = create_model("birefnet_lite")
    assert not model.activation_checkpointing
    assert enable_activation_checkpointing(model) == 12  # 2 + 2 + 6 + 2 Swin-T blocks
    assert model.activation_checkpointing
