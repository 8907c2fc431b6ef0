"""The training task's typed option records (salseg.tasks.options): every flat ``model.<key>`` of
the configs is routed into its record, an unknown one is a clear error through ``salseg-train``,
the checkpoint keeps the keys flat, and checkpoints written by the older task classes
(``U2NetTask`` / ``ISNetTask``, with ``loss_weights`` / ``sync_weights`` / ``sync_mode`` in their
``hyper_parameters``) still load for prediction, fine-tuning and resuming."""
from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from fixtures.predict.helpers import object_image, random_model, save, single_thread  # noqa: F401
from omegaconf import OmegaConf
from PIL import Image
from train_helpers import run_train_cli, tiny_data_overrides

from salseg.config import CONFIG_DIR
from salseg.models.weights import save_state_dict
from salseg.tasks import TrainingTask
from salseg.tasks.options import (
    GTEncoderOptions,
    ImageLogging,
    InitOptions,
    OptimizerOptions,
    SpeedOptions,
    known_keys,
    task_options,
)
from salseg.training.checks import ConfigError
from salseg.training.pipeline import PIPELINE_KEYS

FAST = ["model=u2netp", "trainer=cpu", "trainer.max_epochs=1", "trainer.limit_train_batches=1",
        "trainer.limit_val_batches=1", "trainer.enable_progress_bar=false", "logger=none",
        "model.log_images_every_n_steps=0"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


def tiny(data_root: Path) -> list[str]:
    return tiny_data_overrides(data_root, size=32, n_train=2, n_val=2, batch_size=2)


def _config_keys() -> set[str]:
    """Every ``model.<key>`` the model configs set (base, models, experiments)."""
    keys: set[str] = set()
    files = [*(CONFIG_DIR / "model").glob("*.yaml"), CONFIG_DIR / "model" / "base" / "task.yaml"]
    for path in files:
        doc = OmegaConf.to_container(OmegaConf.load(path))
        model = doc if path.parent.name == "base" else doc.get("model", {})
        keys |= set(model)
    for path in (CONFIG_DIR / "experiment").glob("*.yaml"):
        keys |= set(OmegaConf.to_container(OmegaConf.load(path)).get("model", {}) or {})
    return keys - {"_target_", "defaults", *PIPELINE_KEYS}


def test_every_config_key_has_a_record():
    keys = _config_keys()
    assert {"init_weights", "compile", "gt_encoder_bn", "log_images_every_n_steps"} <= keys
    assert keys <= set(known_keys())


def test_flat_keys_are_routed_and_come_back_flat():
    options = task_options(name="u2netp", compile="reduce-overhead", freeze_bn=True,
                           num_log_images=2, gt_encoder_bn="eval", scheduler_interval="step")
    assert options.speed == SpeedOptions(compile="reduce-overhead")
    assert options.speed.compile_mode == "reduce-overhead"
    assert options.init == InitOptions(freeze_bn=True) and options.init.freeze_bn_mode == "true"
    assert options.images == ImageLogging(num_log_images=2)
    assert options.gt_encoder == GTEncoderOptions(gt_encoder_bn="eval")
    assert options.optim == OptimizerOptions(scheduler_interval="step")
    flat = options.flat()
    assert sorted(flat) == known_keys() and flat["compile"] == "reduce-overhead"
    assert task_options(**flat) == options


def test_the_task_keeps_its_hyperparameters_flat():
    task = TrainingTask(name="u2netp", channels_last=True, num_log_images=3)
    assert task.hparams.channels_last is True and task.hparams.num_log_images == 3
    assert task.hparams.name == "u2netp" and "optimizer" not in task.hparams
    assert sorted(task.hparams) == sorted(set(known_keys()) - {"optimizer", "scheduler"})
    assert task.options.speed.channels_last and task.options.images.num_log_images == 3


@pytest.mark.parametrize("flat, match", [
    ({"freeze_bn": "sometimes"}, "model.freeze_bn must be auto, true or false"),
    ({"compile": "fastest"}, "model.compile must be true, false or one of"),
    ({"sync_dtype": "float16"}, "model.sync_dtype must be one of"),
    ({"gt_encoder_bn": "frozen"}, "model.gt_encoder_bn must be one of"),
    ({"scheduler_interval": "batch"}, "model.scheduler_interval must be one of"),
    ({"loss_form": "sigmoid"}, "model.loss_form must be one of"),
    ({"freeze_encoder_epochs": -1}, "model.freeze_encoder_epochs must be a non-negative"),
    ({"num_log_images": -2}, "model.num_log_images must be a non-negative"),
    ({"backbone_lr_mult": "fast"}, "model.backbone_lr_mult must be a non-negative"),
    ({"init_weights": "a.pth", "backbone_weights": "imagenet"}, "are exclusive"),
    ({"loss_weights": [1] * 7}, r"model.loss_weights: not a key .* known keys are"),
])
def test_records_check_their_values(flat, match):
    with pytest.raises(ValueError, match=match):
        task_options(name="u2netp", **flat)


def test_an_unknown_model_key_is_one_clear_line(data_root, tmp_path, monkeypatch):
    """``+model.bogus=1`` through ``salseg-train``: exit 2, one line naming the key and the
    known keys (it was a TypeError traceback from deep inside Hydra's instantiate)."""
    code, err = run_train_cli([*FAST, *tiny(data_root), "+model.bogus=1",
                               f"hydra.run.dir={tmp_path / 'run'}"], monkeypatch)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert lines[-1].startswith("salseg-train: error: model.bogus: not a key of the training task")
    assert "known keys are" in lines[-1] and "init_weights" in lines[-1], err
    assert "Traceback" not in err
    with pytest.raises(ConfigError, match="model.bogus"):
        TrainingTask(name="u2netp", bogus=1)


# ------------------------------------------------------- checkpoints of the older task classes

OLD_U2NET = {  # U2NetTask's hyper_parameters, as its checkpoints hold them
    "name": "u2netp", "loss_weights": [1, 1, 1, 1, 1, 1, 1], "loss": None, "loss_form": "logits",
    "feature_sync": True, "gt_encoder_ckpt": None, "gt_encoder_bn": "train", "stop_max_f": None,
    "scheduler_interval": "epoch", "init_weights": None, "channels_last": False,
    "compile": False, "freeze_encoder_epochs": 0, "val_convention": "u2net",
    "log_images_every_n_steps": 500, "num_log_images": 4, "net_kwargs": None,
    "input_size": [32, 32], "activation_checkpointing": False, "fused_optimizer": None,
    "progress_bar_loss": None, "freeze_bn": "auto"}


def _old_ckpt(model: torch.nn.Module, hparams: dict, path: Path) -> Path:
    torch.save({"pytorch-lightning_version": L.__version__, "epoch": 3, "global_step": 40,
                "hyper_parameters": hparams,
                "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, path)
    return path


@pytest.mark.parametrize("name, extra", [
    ("u2netp", {}),
    ("isnet", {"name": "isnet", "val_convention": "dis_valid", "loss_weights": None,
               "sync_weights": [1] * 6, "sync_mode": "MSE"}),
])
def test_old_checkpoints_predict_as_their_weights(name, extra, tmp_path):
    """``salseg-predict --weights old.ckpt`` reads the architecture and the input size from the
    old hyper-parameters and predicts exactly what the same weights as a ``.pth`` predict."""
    from salseg.cli.predict import main

    model = random_model(name, seed=4)
    ckpt = _old_ckpt(model, {**OLD_U2NET, **extra}, tmp_path / "old.ckpt")
    pth = save_state_dict(model, tmp_path / "same.pth")
    save(object_image(40, 48, seed=1), tmp_path / "in" / "a.png")
    common = ["--device", "cpu", "-q"]
    assert main([str(tmp_path / "in"), "-o", str(tmp_path / "ckpt"), "--weights", str(ckpt),
                 *common]) == 0
    assert main([str(tmp_path / "in"), "-o", str(tmp_path / "pth"), "--weights", str(pth),
                 "--model", name, "--input-size", "32", *common]) == 0
    got = np.asarray(Image.open(tmp_path / "ckpt" / "a.png"))
    assert got.shape == (40, 48)
    np.testing.assert_array_equal(got, np.asarray(Image.open(tmp_path / "pth" / "a.png")))


def test_old_checkpoint_fine_tunes_and_resumes(data_root, tmp_path, monkeypatch):
    """``train.py model.init_weights=old.ckpt`` fine-tunes from an old checkpoint; a checkpoint
    whose hyper-parameters carry the old keys resumes (``ckpt_path``)."""
    old = _old_ckpt(random_model("u2netp", seed=5), OLD_U2NET, tmp_path / "old.ckpt")
    run = tmp_path / "finetune"
    code, err = run_train_cli([*FAST, *tiny(data_root), f"model.init_weights={old}",
                               f"hydra.run.dir={run}"], monkeypatch)
    assert code == 0, err
    last = run / "checkpoints" / "last.ckpt"
    state = torch.load(last, map_location="cpu", weights_only=True)
    assert state["hyper_parameters"]["init_weights"] == str(old)
    assert "loss_weights" not in state["hyper_parameters"]
    state["hyper_parameters"] = {**OLD_U2NET, "input_size": [32, 32]}  # as U2NetTask wrote it
    resumable = tmp_path / "resumable.ckpt"
    torch.save(state, resumable)
    code, err = run_train_cli([*FAST, *tiny(data_root), "trainer.max_epochs=2",
                               f"ckpt_path={resumable}", f"hydra.run.dir={tmp_path / 'resumed'}"],
                              monkeypatch)
    assert code == 0, err
    resumed = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", map_location="cpu",
                         weights_only=True)
    assert resumed["epoch"] == 1 and resumed["global_step"] == 2
