"""The CUDA paths: device-side augmentation, prediction, activation checkpointing, mixed-precision
training with fused Adam and CUDA-graph compilation, on a CUDA device.

Skipped where no CUDA device is present (CI has none); run on a GPU with
``python -m pytest tests/test_cuda.py`` (docs/performance.md records the last run).  The CPU
versions of these checks run everywhere (``test_perf_*.py``, ``test_predict_*.py``).
TF32 is switched off where results are compared with the CPU, as for the parity check.
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from test_perf_gpu_aug import RECIPES

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture
def no_tf32():
    conv, mm = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = conv, mm


@pytest.mark.parametrize("recipe_cfg", RECIPES)
def test_gpu_aug_on_cuda_equals_cpu_recipe(recipe_cfg):
    from test_perf_gpu_aug import TOL, _cpu_reference, _sample

    from salseg.data.gpu_aug import DeviceAugment, Draw
    from salseg.data.transforms import build_recipe

    recipe = build_recipe(recipe_cfg)
    rng = np.random.default_rng(1)
    samples = [_sample(rng, 57, 75) for _ in range(3)]
    images = torch.stack([torch.from_numpy(s[0]).permute(2, 0, 1) for s in samples]).cuda()
    masks = torch.stack([torch.from_numpy(s[1])[None] for s in samples]).cuda()
    room = 0 if recipe.crop is None else recipe.size[0] - recipe.crop[0] - 1
    draw = Draw(flip=torch.tensor([True, False, True]), top=torch.tensor([0, room, 1]),
                left=torch.tensor([room, 2, 0]))
    got_img, got_mask = DeviceAugment(recipe, seed=0)(images, masks, draw)
    assert got_img.device.type == "cuda"
    for i, (image, mask) in enumerate(samples):
        ref_img, ref_mask = _cpu_reference(recipe, image, mask, bool(draw.flip[i]),
                                           int(draw.top[i]), int(draw.left[i]))
        assert (got_img[i].cpu() - torch.from_numpy(ref_img)).abs().max().item() <= TOL
        ref_mask = torch.from_numpy(np.ascontiguousarray(ref_mask))
        assert (got_mask[i, 0].cpu() - ref_mask).abs().max().item() <= TOL


def test_predictor_on_cuda_matches_cpu(no_tf32):
    from salseg.models import create_model
    from salseg.predict.predictor import Predictor

    torch.manual_seed(0)
    net = create_model("u2netp").eval()
    image = np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    cpu = Predictor(copy.deepcopy(net), model="u2netp", device="cpu").predict_alpha(image)
    gpu = Predictor(copy.deepcopy(net), model="u2netp", device="cuda").predict_alpha(image)
    assert gpu.shape == cpu.shape == (90, 120)
    # saved maps are 8-bit: a probability within 1e-4 may still round to the next level
    assert np.abs(gpu - cpu).max() <= 1 / 255 + 1e-6
    assert (gpu != cpu).mean() < 0.01
    bf16 = Predictor(copy.deepcopy(net), model="u2netp", device="cuda",
                     precision="bf16").predict_alpha(image)
    assert np.abs(bf16 - cpu).mean() < 0.02  # bf16 keeps 8 bits of mantissa


def test_activation_checkpointing_on_cuda_equals_plain_step(no_tf32):
    from test_perf_checkpointing import _step

    from salseg.models import create_model
    from salseg.models.checkpointing import enable_activation_checkpointing

    torch.manual_seed(0)
    plain = create_model("isnet_gt_encoder").cuda().train()
    ckpt = copy.deepcopy(plain)
    enable_activation_checkpointing(ckpt)
    x = torch.rand(2, 1, 64, 48, device="cuda")
    torch.testing.assert_close(_step(plain, x), _step(ckpt, x))
    # The bilinear up-sampling backward accumulates with atomics on CUDA (no deterministic
    # kernel), so two identical plain steps already differ in the last bits of every gradient;
    # element-wise tolerances fail on near-cancelling sums (seen on an H200), the norm of the
    # difference does not.  A wrong recomputation differs by orders of magnitude more.
    for (name, pa), (_, pb) in zip(plain.named_parameters(), ckpt.named_parameters()):
        rel = ((pa.grad - pb.grad).norm() / pa.grad.norm().clamp_min(1e-12)).item()
        assert rel < 1e-3, (name, rel)


@pytest.mark.parametrize("extra", [
    ["trainer.precision=bf16-mixed", "data.gpu_aug=true"],
    ["trainer.precision=16-mixed", "model.channels_last=true"],
    ["trainer.precision=bf16-mixed", "model.compile=reduce-overhead"],
], ids=["bf16-gpu_aug", "fp16-channels_last", "bf16-cuda_graphs"])
def test_training_on_cuda(extra, tmp_path):
    from train_helpers import compose_train, tiny_data_overrides

    from salseg.training import train

    (tmp_path / "data").mkdir()
    overrides = ["model=u2netp", "trainer=gpu", "trainer.max_steps=4", "trainer.max_epochs=-1",
                 "logger=csv", "callbacks=paper",
                 *tiny_data_overrides(tmp_path / "data", size=64, n_train=16, n_val=4,
                                      batch_size=4), *extra]
    cfg = compose_train(overrides, tmp_path / "run")
    train(cfg)
    ckpt = torch.load(next(Path(tmp_path / "run").rglob("*.ckpt")), map_location="cpu",
                      weights_only=False)
    states = ckpt["optimizer_states"][0]
    assert states["param_groups"][0].get("fused") is True  # fused Adam on CUDA
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values()
               if torch.is_tensor(v) and v.is_floating_point())
    assert not any(k.startswith("_compiled") or "_orig_mod" in k for k in ckpt["state_dict"])
