"""BiRefNet training on the house: ``model=birefnet_lite`` through ``train.py`` (loss terms
logged by name), ``experiment=birefnet_dis5k`` against the official Config, the official
augmentations as recipe ops, ImageNet Swin weights through ``model.backbone_weights`` (a fake
checkpoint from a local file), activation checkpointing through the task option, and
salseg-serve's BiRefNet masks byte-identical to salseg-predict's."""
from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image
from train_helpers import compose_train, tiny_data_overrides

from salseg.data.transforms import ColorEnhance, MaskPepper, RandomRotate, build_recipe
from salseg.models import create_model
from salseg.models.backbones import get_backbone, register_backbone
from salseg.models.backbones.swin import SwinTransformer, swin_classification_keys
from salseg.models.errors import WeightsError
from salseg.tasks import TrainingTask

ROOT = Path(__file__).resolve().parent.parent

# The official Config of the parity commit (task 'DIS5K'; reference README "Config values" and
# the manifest's config_training), copied here: the project tests itself without the reference.
OFFICIAL = {"size": 1024, "batch_size": 8, "mixed_precision": "bf16", "compile": True,
            "optimizer": "AdamW", "lr": 1e-4 * math.sqrt(8 / 4), "finetune_last_epochs": -40,
            "lambdas": {"bce": 30.0, "iou": 0.5, "ssim": 10.0}, "rand_seed": 7,
            "preproc_methods": ["flip", "enhance", "rotate", "pepper"]}


# -- train.py -----------------------------------------------------------------------------------
@pytest.mark.slow
def test_birefnet_lite_trains_through_train_py(tmp_path):
    """``python train.py model=birefnet_lite trainer=cpu`` on synthetic data (32², the smallest
    input): a finite loss, every term logged under the card's output names."""
    run = tmp_path / "run"
    (tmp_path / "data").mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(ROOT / "train.py"), "model=birefnet_lite", "trainer=cpu",
           "trainer.max_steps=1", "trainer.max_epochs=1", "trainer.limit_val_batches=0",
           "trainer.log_every_n_steps=1", "callbacks=none", "logger=csv",
           "model.log_images_every_n_steps=0", f"hydra.run.dir={run}",
           *tiny_data_overrides(tmp_path / "data", size=32, n_train=2, n_val=2, batch_size=2)]
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = list(csv.DictReader(open(next(run.rglob("metrics.csv")), newline="")))
    logged = {k for r in rows for k, v in r.items() if v}
    levels = ("level4", "level3", "level2", "mask")
    wanted = {f"train/{c}_{lv}" for c in ("bce", "iou", "ssim") for lv in levels}
    wanted |= {f"train/gdt_preds{i}" for i in (1, 2, 3)}
    wanted |= {"train/loss_bce", "train/loss_iou", "train/loss_ssim", "train/loss_gdt"}
    assert wanted <= logged, sorted(wanted - logged)
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(losses) == 1 and math.isfinite(losses[0])


# -- experiment=birefnet_dis5k ------------------------------------------------------------------
def test_experiment_birefnet_dis5k_is_the_official_config(tmp_path):
    cfg = compose_train(["experiment=birefnet_dis5k"], tmp_path)
    assert cfg.model.name == "birefnet"  # Swin-L, the released DIS5K weights' network
    assert cfg.data.name == "dis5k" and cfg.data.batch_size == OFFICIAL["batch_size"]
    assert cfg.model.optimizer._target_ == "torch.optim.AdamW"
    lr_rule = 1e-4 * math.sqrt(cfg.data.batch_size / 4)
    assert cfg.model.optimizer.lr == pytest.approx(OFFICIAL["lr"], rel=1e-12)
    assert cfg.model.optimizer.lr == pytest.approx(lr_rule, rel=1e-12)
    assert cfg.model.optimizer.weight_decay == 0.01
    assert cfg.model.scheduler is None
    assert cfg.trainer.precision == "bf16-mixed"
    assert cfg.model.compile is OFFICIAL["compile"]
    assert cfg.seed == OFFICIAL["rand_seed"]
    assert cfg.aug.name == "birefnet_paper" and cfg.aug.size == OFFICIAL["size"]
    recipe = build_recipe(cfg.aug)
    assert recipe.size == (1024, 1024) and recipe.crop is None
    assert recipe.flip == "horizontal" and recipe.flip_p == 0.5
    assert {"flip", *recipe.ops} == set(OFFICIAL["preproc_methods"])
    loss = cfg.model.loss
    assert {k: loss[k].weight for k in OFFICIAL["lambdas"]} == OFFICIAL["lambdas"]
    assert loss.bce.finetune.last_epochs == -OFFICIAL["finetune_last_epochs"]
    assert loss.iou.finetune.last_epochs == -OFFICIAL["finetune_last_epochs"]
    assert (loss.bce.finetune.factor, loss.iou.finetune.factor) == (0.0, 0.5)
    assert "finetune" not in loss.ssim
    assert cfg.trainer.max_epochs == 500


def test_model_config_is_the_official_optimizer(tmp_path):
    cfg = compose_train(["model=birefnet_lite"], tmp_path)
    assert cfg.model.optimizer._target_ == "torch.optim.AdamW"
    assert cfg.model.optimizer.lr == pytest.approx(OFFICIAL["lr"], rel=1e-12)
    assert cfg.aug.name == "birefnet_paper"


# -- the official augmentations as recipe ops ---------------------------------------------------
def _sample(seed=0, h=64, w=48):
    rng = np.random.default_rng(seed)
    image = rng.uniform(0, 255, (h, w, 3)).astype(np.float32)
    mask = np.zeros((h, w), np.float32)
    mask[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 1.0
    return image, mask


def test_rotate_turns_image_and_mask_by_the_same_integer_angle():
    image, mask = _sample()
    op = RandomRotate(prob=1.0)
    op.set_random_seed(3)
    params = op.get_params_dependent_on_data({"shape": image.shape}, {})
    angle = params["angle"]
    assert isinstance(angle, int) and -15 <= angle <= 14
    out = op.apply(image, angle=angle)
    u8 = np.rint(image).astype(np.uint8)
    want = np.asarray(Image.fromarray(u8).rotate(angle, Image.Resampling.BICUBIC))
    assert np.array_equal(out, want.astype(np.float32))
    m = op.apply_to_mask(mask, angle=angle)
    want_m = np.asarray(Image.fromarray((mask * 255).astype(np.uint8)).rotate(
        angle, Image.Resampling.BICUBIC)).astype(np.float32) * np.float32(1 / 255)
    assert np.array_equal(m, want_m)
    assert op.apply(image, angle=None) is image  # p = 0.2: most samples are not rotated
    official = RandomRotate()  # p = 0.2 (random() > 0.8)
    rotated = 0
    for s in range(400):
        official.set_random_seed(s)
        rotated += official.get_params_dependent_on_data({}, {})["angle"] is not None
    assert 40 < rotated < 120  # about 20 %


def test_enhance_factors_are_the_official_ranges():
    op = ColorEnhance()
    seen = []
    for s in range(300):
        op.set_random_seed(s)
        seen.append(op.get_params_dependent_on_data({}, {})["factors"])
    b, c, col, sh = (np.array(v) for v in zip(*seen))
    assert b.min() == 0.5 and b.max() == 1.5 and c.min() == 0.5 and c.max() == 1.5
    assert col.min() == 0.0 and col.max() == 2.0 and sh.min() == 0.0 and sh.max() == 3.0
    image, _ = _sample()
    assert np.array_equal(op.apply(image, factors=(1.0, 1.0, 1.0, 1.0)), np.rint(image))


def test_pepper_touches_the_mask_only():
    image, mask = _sample(h=200, w=100)
    op = MaskPepper()
    op.set_random_seed(0)
    params = op.get_params_dependent_on_data({"shape": image.shape}, {})
    assert len(params["rows"]) == int(0.0015 * 200 * 100)
    assert op.apply(image, **params) is image
    out = op.apply_to_mask(mask, **params)
    changed = out != mask
    assert 0 < changed.sum() <= 30 and set(np.unique(out[changed])) <= {0.0, 1.0}


def test_birefnet_recipe_is_seeded_and_ops_are_options_of_any_recipe():
    from salseg.data.transforms import SegTransform

    recipe = build_recipe({"name": "birefnet_paper", "size": 64})
    assert recipe.ops == ("rotate", "enhance", "pepper") and recipe.normalization == "birefnet"
    image, mask = _sample(h=80, w=80)
    a = SegTransform(recipe, train=True, seed=5)(image.astype(np.uint8), mask)
    b = SegTransform(recipe, train=True, seed=5)(image.astype(np.uint8), mask)
    assert a["image"].shape == (3, 64, 64) and torch.equal(a["image"], b["image"])
    assert torch.equal(a["mask"], b["mask"])
    other = build_recipe({"name": "isnet_paper", "ops": ["enhance"]})
    assert other.ops == ("enhance",)
    with pytest.raises(ValueError, match="aug.ops"):
        build_recipe({"name": "isnet_paper", "ops": ["solarize"]})
    from salseg.data.gpu_aug import check_recipe

    with pytest.raises(ValueError, match="aug.ops"):
        check_recipe(recipe)


# -- ImageNet backbone weights through the weights room -----------------------------------------
def _fake_imagenet_checkpoint(path: Path, seed: int = 1) -> dict:
    """A Swin-T classification checkpoint as the official release lays it out (``{"model":
    ...}`` with ``head``, the final ``norm`` and ``attn_mask`` buffers, without ``norm0..3``),
    filled with seeded values."""
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for k, v in SwinTransformer("swin_v1_t").state_dict().items():
        if k.split(".")[0] in ("norm0", "norm1", "norm2", "norm3"):
            continue
        sd[k] = v.clone() if not v.is_floating_point() else torch.randn(v.shape, generator=gen)
    sd["layers.0.blocks.1.attn_mask"] = torch.zeros(64, 49, 49)
    sd["norm.weight"], sd["norm.bias"] = torch.ones(768), torch.zeros(768)
    sd["head.weight"], sd["head.bias"] = torch.randn(1000, 768, generator=gen), torch.zeros(1000)
    torch.save({"model": sd}, path)
    return sd


@pytest.fixture
def local_imagenet(tmp_path):
    """The swin_v1_t record's ``imagenet`` source served from a local file (no internet)."""
    path = tmp_path / "swin_tiny_patch4_window7_224_22kto1k_finetune.pth"
    sd = _fake_imagenet_checkpoint(path)
    record = get_backbone("swin_v1_t")
    src = record.pretrained["imagenet"]
    register_backbone(replace(record, pretrained={"imagenet": replace(src, url=path.as_uri())}),
                      replace=True)
    try:
        yield path, sd
    finally:
        register_backbone(record, replace=True)


def test_swin_records_name_the_official_release():
    for name, tag in (("swin_v1_t", "swin_tiny_patch4_window7_224_22kto1k_finetune.pth"),
                      ("swin_v1_s", "swin_small_patch4_window7_224_22kto1k_finetune.pth"),
                      ("swin_v1_b", "swin_base_patch4_window12_384_22kto1k.pth"),
                      ("swin_v1_l", "swin_large_patch4_window12_384_22kto1k.pth")):
        record = get_backbone(name)
        src = record.pretrained["imagenet"]
        assert src.url.startswith("https://github.com/SwinTransformer/storage/releases/")
        assert src.url.endswith(tag)
    assert get_backbone("swin_v1_l").channels == (192, 384, 768, 1536)
    assert swin_classification_keys("head.weight") is None
    assert swin_classification_keys("norm.bias") is None
    assert swin_classification_keys("layers.1.blocks.1.attn.attn_mask") is None
    assert swin_classification_keys("norm3.bias") == "norm3.bias"


@pytest.mark.parametrize("how", ["imagenet", "path"])
def test_backbone_weights_option_loads_the_swin_strictly(local_imagenet, how):
    path, sd = local_imagenet
    torch.manual_seed(0)
    task = TrainingTask(name="birefnet_lite",
                        backbone_weights="imagenet" if how == "imagenet" else str(path))
    torch.manual_seed(0)
    plain = create_model("birefnet_lite")
    got = task.model.state_dict()
    for k, v in sd.items():
        if swin_classification_keys(k) is not None:
            assert torch.equal(got[f"bb.{k}"], v), k
    # the stage norms keep their initialisation, the decoder is untouched
    assert torch.equal(got["bb.norm0.weight"], torch.ones(96))
    for k, v in plain.state_dict().items():
        if not k.startswith("bb."):
            assert torch.equal(got[k], v), k


def test_backbone_weights_refuses_a_checkpoint_of_another_backbone(tmp_path):
    sd = {k: v for k, v in SwinTransformer("swin_v1_s").state_dict().items()}
    torch.save({"model": sd}, tmp_path / "swin_s.pth")
    with pytest.raises(WeightsError, match=r"swin_s\.pth.*not weights of this backbone"):
        TrainingTask(name="birefnet_lite", backbone_weights=str(tmp_path / "swin_s.pth"))
    with pytest.raises(WeightsError, match="nope.pth"):
        TrainingTask(name="birefnet_lite", backbone_weights=str(tmp_path / "nope.pth"))


def test_backbone_weights_through_the_training_config(local_imagenet, tmp_path):
    path, sd = local_imagenet
    cfg = compose_train(["model=birefnet_lite", "model.backbone_weights=imagenet"], tmp_path)
    from salseg.training import task_config

    task = instantiate(task_config(cfg.model))
    key = "layers.2.blocks.3.mlp.fc1.weight"
    assert torch.equal(task.model.state_dict()[f"bb.{key}"], sd[key])


# -- activation checkpointing through the task option -------------------------------------------
@pytest.mark.slow  # ~45 s on 2 shared cores (two BiRefNet_lite steps)
def test_activation_checkpointing_option_gives_the_same_loss_and_gradients():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    gt = (torch.rand(2, 1, 32, 32) > 0.5).float()
    results = []
    for flag in (False, True):
        torch.manual_seed(1)
        task = TrainingTask(name="birefnet_lite", activation_checkpointing=flag)
        assert task.model.activation_checkpointing is flag
        task.model.train()
        torch.manual_seed(2)  # dropout / drop-path draw the same masks (checkpoint replays them)
        loss, _ = task.compute_loss({"image": x, "mask": gt}, task.model(x))
        loss.backward()
        grads = {k: p.grad.clone() for k, p in task.model.named_parameters()
                 if p.grad is not None}
        results.append((loss.detach(), grads))
    (l0, g0), (l1, g1) = results
    assert torch.allclose(l0, l1, rtol=1e-5, atol=1e-5)
    assert g0.keys() == g1.keys()
    for k in ("bb.patch_embed.proj.weight", "bb.layers.2.blocks.5.attn.qkv.weight",
              "decoder.conv_out1.0.weight"):
        if k in g0:
            scale = g0[k].abs().max()
            assert torch.allclose(g0[k], g1[k], atol=1e-4 * float(scale) + 1e-8), k


# -- serve == predict ---------------------------------------------------------------------------
@pytest.mark.slow
def test_serve_birefnet_mask_equals_salseg_predict(tmp_path):
    """salseg-serve normalises BiRefNet's output as its card says (sigmoid), as salseg-predict:
    the mask bytes are equal (serve used min-max for every model before)."""
    import httpx
    from fixtures.predict.helpers import object_image, random_model
    from serve_helpers import ServerThread

    from salseg.cli.predict import main as predict_main
    from salseg.models.weights import save_state_dict
    from salseg.predict.predictor import Predictor
    from salseg.serve.app import ServedModel, ServeSettings, create_app

    weights = tmp_path / "birefnet_lite_random.pth"
    save_state_dict(random_model("birefnet_lite", seed=4), weights)
    image = tmp_path / "photo.png"
    Image.fromarray(object_image(40, 56, seed=2)).save(image)
    out = tmp_path / "out"
    args = ["--model", "birefnet_lite", "--input-size", "32", "--device", "cpu"]
    assert predict_main([str(image), "-o", str(out), "--weights", str(weights), "-q",
                         "--backend", "torch", *args]) == 0
    predictor = Predictor(str(weights), model="birefnet_lite", input_size=32, device="cpu",
                          backend="torch")
    app = create_app([ServedModel("b", predictor, weights.name)],
                     ServeSettings(max_batch=1, timeout=600))  # a busy machine is slow
    with ServerThread(app) as url, httpx.Client(base_url=url, timeout=600) as client:
        r = client.post("/api/remove", files={"file": (image.name, image.read_bytes())},
                        data={"output": "mask"})
    assert r.status_code == 200, r.text
    assert r.content == (out / "photo.png").read_bytes()
