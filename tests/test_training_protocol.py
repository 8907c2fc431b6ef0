"""The training protocol and its safety nets: what is selected on what, ``test=true``, the official
loss form, IS-Net phase 1 and its float validation, atomic checkpoints, run directories, resumed
CSV logs, data roots, progress bars and the one-line errors of ``salseg-train`` (tiny synthetic
data, U2-NetP, CPU)."""
from __future__ import annotations

import json
import multiprocessing as mp
import random
import tempfile
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from train_helpers import compose_train, spy_on_trainers, tiny_data_overrides
from train_helpers import run_train_cli as _cli

from salseg.config import CONFIG_DIR
from salseg.training import train
from salseg.training.checks import ConfigError

FAST = ["model=u2netp", "trainer=cpu", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
        "trainer.enable_progress_bar=false"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


def tiny(data_root: Path, **kw) -> list[str]:
    return tiny_data_overrides(data_root, size=64, n_train=8, n_val=4, batch_size=4, **kw)


def _csv_rows(path: Path) -> list[dict[str, str]]:
    import csv

    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# ------------------------------------------------------------------ issue 9.2: selection

@pytest.mark.parametrize("experiment", ["u2net_duts", "u2netp_duts"])
def test_paper_recipes_never_select_on_a_test_set(experiment, tmp_path):
    cfg = compose_train([f"experiment={experiment}"], tmp_path)
    assert cfg.callbacks.model_checkpoint.monitor is None
    assert cfg.callbacks.model_checkpoint.save_top_k == 0 and cfg.callbacks.model_checkpoint.save_last
    assert cfg.callbacks.get("early_stopping") is None
    assert list(cfg.data.val) == [] and cfg.data.val_split == 0.0  # all of DUTS-TR trains
    assert [m.name for m in cfg.data.monitor] == ["DUTS-TE"]
    assert cfg.data.drop_last is False  # official DataLoader keeps the last incomplete batch


def test_test_monitor_is_logged_under_its_name_and_final_weights_are_reported(data_root, tmp_path):
    cfg = compose_train([*FAST, "callbacks=paper", "logger=csv", "trainer.log_every_n_steps=1",
                         *tiny(data_root), "data.val=[]",
                         "+data.monitor=[{kind: synthetic, split: val, name: synthetic-val}]"],
                        tmp_path)
    assert train(cfg) is None
    rows = _csv_rows(tmp_path / "csv" / "metrics.csv")
    keys = set(rows[0])
    assert "test_monitor/synthetic-val/maxF" in keys and "val/maxF" not in keys
    summary = json.loads((tmp_path / "train_summary.json").read_text())
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert summary["reported_checkpoint"] == summary["last_checkpoint"] == str(last)
    assert summary["best_checkpoint"] is None and summary["best_val_maxF"] is None
    assert summary["selection"]["rule"].startswith("final weights")
    assert summary["selection"]["test_monitor"] == ["synthetic-val"]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["last.ckpt"]


def test_selection_on_a_test_monitor_is_refused(data_root, tmp_path):
    cfg = compose_train([*FAST, "logger=none", *tiny(data_root),
                         "callbacks.model_checkpoint.monitor=test_monitor/synthetic-val/maxF"],
                        tmp_path)
    with pytest.raises(ConfigError, match="test_monitor"):
        train(cfg)


def test_holdout_selection_is_recorded(data_root, tmp_path):
    cfg = compose_train([*FAST, "logger=none", *tiny(data_root), "data.val=[]",
                         "+data.val_split=0.25"], tmp_path)
    train(cfg)
    summary = json.loads((tmp_path / "train_summary.json").read_text())
    assert "hold-out of 0.25" in summary["selection"]["data"]
    assert summary["selection"]["monitors"] == ["val/maxF"]


# ------------------------------------------------------------------ issue 9.3: test=true

def test_test_true_scores_like_salseg_eval_model_mode(data_root, tmp_path):
    cfg = compose_train([*FAST, "logger=none", "test=true", *tiny(data_root)], tmp_path / "run")
    train(cfg)
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["status"] == "completed" and summary["completed"] == ["fit", "test"]
    test = summary["test"]
    assert test["checkpoint"] == summary["reported_checkpoint"]
    assert (tmp_path / "run" / "test" / "metrics.json").is_file()
    # the same checkpoint through `salseg-eval ckpt=... data=...` gives the same numbers
    from salseg.cli.eval import run

    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        ecfg = compose("eval", overrides=[f"ckpt={test['checkpoint']}", "device=cpu",
                                          "progress=false", "plots=false", "workers=1",
                                          *[o for o in tiny(data_root) if not o.startswith("aug.")]])
    expected = run(ecfg, tmp_path / "eval")
    assert test["metrics"] == expected


def test_summary_is_written_when_a_later_stage_fails(data_root, tmp_path, monkeypatch):
    import salseg.training.pipeline as training

    def broken(*args, **kwargs):
        raise RuntimeError("test stage broke")

    monkeypatch.setattr(training, "run_test", broken)
    cfg = compose_train([*FAST, "logger=none", "test=true", *tiny(data_root)], tmp_path)
    with pytest.raises(RuntimeError, match="test stage broke"):
        train(cfg)
    summary = json.loads((tmp_path / "train_summary.json").read_text())
    assert summary["status"] == "failed" and summary["completed"] == ["fit"]
    assert "test stage broke" in summary["error"]
    assert Path(summary["last_checkpoint"]).is_file()


def test_max_steps_before_the_first_validation_ends_cleanly(data_root, tmp_path):
    """Default callbacks (early stopping on val/maxF), an epoch longer than max_steps."""
    cfg = compose_train(["model=u2netp", "trainer=cpu", "logger=none", "trainer.max_steps=2",
                         "trainer.enable_progress_bar=false",
                         *tiny_data_overrides(data_root, size=64, n_train=16, n_val=4,
                                              batch_size=2)], tmp_path)
    assert train(cfg) is None
    summary = json.loads((tmp_path / "train_summary.json").read_text())
    assert summary["global_step"] == 2 and summary["status"] == "completed"


# ------------------------------------------------------------------ issue 9.4: loss form

def test_official_loss_form_on_saturated_logits():
    """Where float32's sigmoid saturates, nn.BCELoss hits its clamp (value 100 (1-t), zero
    gradient) while the logits form keeps the exact value and gradient sigmoid(x) - t."""
    from salseg.losses.bce import bce

    logits = torch.tensor([[[[20.0, -95.0, 0.5]]]])
    target = torch.tensor([[[[0.5, 0.5, 1.0]]]])
    values, grads = {}, {}
    for form in ("logits", "official"):
        x = logits.clone().requires_grad_(True)
        value = bce(x, target, form=form)
        value.backward()
        values[form], grads[form] = value, x.grad.flatten()
    official_ref = F.binary_cross_entropy(torch.sigmoid(logits), target)  # the official code
    assert values["official"] == official_ref
    assert values["official"].item() == pytest.approx((50.0 + 50.0 + 0.474077) / 3, rel=1e-5)
    assert values["logits"].item() == pytest.approx((10.0 + 47.5 + 0.474077) / 3, rel=1e-5)
    assert grads["official"][:2].tolist() == [0.0, 0.0]
    assert grads["logits"][:2].tolist() == pytest.approx([0.5 / 3, -0.5 / 3])
    # unsaturated pixel: both forms agree
    assert grads["official"][2].item() == pytest.approx(grads["logits"][2].item(), rel=1e-5)


def test_official_loss_form_is_refused_under_mixed_precision(data_root, tmp_path):
    from salseg.losses import DeepSupervisionBCE

    loss = DeepSupervisionBCE(form="official")
    with torch.autocast("cpu", dtype=torch.bfloat16), pytest.raises(ValueError, match="32-true"):
        loss([torch.zeros(1, 1, 4, 4)], torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match="32-true"):
        loss([torch.zeros(1, 1, 4, 4, dtype=torch.bfloat16)], torch.zeros(1, 1, 4, 4))
    cfg = compose_train([*FAST, "model.loss_form=official", "trainer.precision=bf16-mixed",
                         *tiny(data_root)], tmp_path)
    with pytest.raises(ConfigError, match="model.loss_form=official"):
        train(cfg)


def test_official_loss_form_trains(data_root, tmp_path):
    from salseg.training import task_config

    cfg = compose_train([*FAST, "model.loss_form=official", "logger=none", *tiny(data_root)], tmp_path)
    from hydra.utils import instantiate

    terms = instantiate(task_config(cfg.model)).criterion.terms
    assert [t.form for t in terms if t.criterion == "bce"] == ["official"]
    train(cfg)


# ------------------------------------------------------------------ issue 9.5: IS-Net phase 1

def test_gt_encoder_alone_validates_on_the_training_masks(data_root, tmp_path, monkeypatch):
    import salseg.training.pipeline as training

    seen = spy_on_trainers(training, monkeypatch)
    cfg = compose_train(["model=isnet_gt_encoder", "trainer=cpu", "logger=none",
                         "trainer.max_epochs=1", "trainer.limit_train_batches=1",
                         "trainer.limit_val_batches=1", "trainer.enable_progress_bar=false",
                         *tiny(data_root)], tmp_path)
    train(cfg)
    dm = seen["trainer"].datamodule
    assert dm.mask_only and dm.val_pairs == dm.train_pairs
    summary = json.loads((tmp_path / "train_summary.json").read_text())
    assert "training masks" in summary["selection"]["data"]


def test_no_config_refers_to_a_missing_callback():
    text = "\n".join(p.read_text() for p in CONFIG_DIR.rglob("*.yaml"))
    assert "gt_encoder_stop" not in text


def _official_valid(pred: torch.Tensor, gt_u8: torch.Tensor) -> tuple[float, float]:
    """IS-Net valid() for one image in float32 (f1score_torch / mae_torch, OFFICIAL_NOTES 3.5)."""
    p = (pred - pred.min()) / (pred.max() - pred.min()) * 255
    g = gt_u8.float()
    pos = g > 128
    pp = torch.histc(p[pos], bins=255, min=0, max=255)
    nn_ = torch.histc(p[~pos], bins=255, min=0, max=255)
    tp, fp = torch.cumsum(torch.flipud(pp), 0), torch.cumsum(torch.flipud(nn_), 0)
    precision, recall = tp / (tp + fp + 1e-4), tp / (pos.sum() + 1e-4)
    f = 1.3 * precision * recall / (0.3 * precision + recall + 1e-8)
    mae = torch.abs(p - g).sum() / (p.numel() * 255.0 + 1e-4)
    return float(f.max()), float(mae)


def test_dis_valid_training_validation_scores_floats_like_the_official_valid():
    from salseg.tasks.validation import build_val_metrics

    g = torch.Generator().manual_seed(0)
    gt = (torch.rand(1, 40, 50, generator=g) > 0.6).to(torch.uint8) * 255
    # values between 8-bit levels: quantising first changes which histc bin they fall in
    pred = (gt.float() / 255 * 0.3 + 0.35 + torch.rand(1, 40, 50, generator=g) * 0.3) / 1.0
    metrics = build_val_metrics("dis_valid")
    metrics.update(pred, gt)
    got = metrics.compute()
    ref_f, ref_mae = _official_valid(pred[0], gt[0])
    assert got["max_f"].item() == pytest.approx(ref_f, abs=1e-6)
    assert got["mae"].item() == pytest.approx(ref_mae, abs=1e-6)
    quant_f, quant_mae = _official_valid(torch.round(pred[0] * 255) / 255, gt[0])
    assert abs(quant_mae - ref_mae) > 1e-4  # the test tells the two apart


# ------------------------------------------------------------------ issue 10.2: atomic ckpts

def _save_forever(io, path: str, tmpdir: str, ready) -> None:  # runs in a forked child
    tempfile.tempdir = tmpdir  # where Lightning's own writer would stage the file
    state = {"state_dict": {f"w{i}": torch.randn(256, 256) for i in range(24)}, "step": 0}
    step = 0
    while True:
        state["step"] = step
        io.save_checkpoint(state, path)
        step += 1
        ready.set()


def test_a_kill_during_a_checkpoint_save_never_destroys_last_ckpt(tmp_path):
    """SIGKILL at random points of repeated saves through the trainer's checkpoint plugin, with
    the temp folder on another file system (/dev/shm) where there is one: last.ckpt is always
    a complete checkpoint (Lightning's own writer left it empty or truncated in ~1/3 of the
    kills)."""
    from salseg.training.trainer import make_trainer

    other_fs = "/dev/shm" if Path("/dev/shm").is_dir() else str(tmp_path / "tmp")
    Path(other_fs).mkdir(exist_ok=True)
    path = tmp_path / "checkpoints" / "last.ckpt"
    path.parent.mkdir()
    cfg = compose_train(["trainer=cpu", "logger=none", "callbacks=none"], tmp_path)
    io = make_trainer(cfg, tmp_path).strategy.checkpoint_io
    ctx = mp.get_context("fork")
    rng = random.Random(0)
    for _ in range(20):
        ready = ctx.Event()
        child = ctx.Process(target=_save_forever, args=(io, str(path), other_fs, ready))
        child.start()
        assert ready.wait(60)
        time.sleep(rng.uniform(0.0, 0.08))
        child.kill()
        child.join()
        state = torch.load(path, map_location="cpu", weights_only=True)
        assert len(state["state_dict"]) == 24
    assert [p.name for p in path.parent.iterdir() if not p.name.startswith(".")] == ["last.ckpt"]


# ------------------------------------------------------------------ issue 10.3/10.4: run dirs

def test_a_second_run_in_the_same_directory_is_refused(data_root, tmp_path):
    base = [*FAST, "logger=none", *tiny(data_root)]
    train(compose_train(base, tmp_path))
    with pytest.raises(ConfigError, match="overwrite=true"):
        train(compose_train(base, tmp_path))
    # overwrite=true replaces the previous run's outputs
    (tmp_path / "checkpoints" / "stale.ckpt").write_bytes(b"x")
    train(compose_train(base + ["overwrite=true"], tmp_path))
    assert not (tmp_path / "checkpoints" / "stale.ckpt").exists()
    assert not list((tmp_path / "checkpoints").glob("last-v*.ckpt"))


def test_resume_with_csv_keeps_the_metric_history(data_root, tmp_path):
    base = ["model=u2netp", "trainer=cpu", "logger=csv", "trainer.log_every_n_steps=1",
            "trainer.enable_progress_bar=false", *tiny(data_root)]
    train(compose_train(base + ["trainer.max_epochs=1"], tmp_path))
    first = _csv_rows(tmp_path / "csv" / "metrics.csv")
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    # resuming inside the run directory is allowed
    train(compose_train(base + ["trainer.max_epochs=2", f"ckpt_path={ckpt}"], tmp_path))
    rows = _csv_rows(tmp_path / "csv" / "metrics.csv")
    steps = [int(r["step"]) for r in rows if r.get("train/loss")]
    first_steps = [int(r["step"]) for r in first if r.get("train/loss")]
    assert first_steps[0] == 0 and steps[: len(first_steps)] == first_steps
    assert max(steps) > max(first_steps)
    assert sum(1 for r in rows if r.get("val/maxF")) == 2  # both epochs' validations


def test_the_hydra_guard_refuses_before_anything_is_written(data_root, tmp_path, monkeypatch,
                                                             capsys):
    run = tmp_path / "run"
    args = [*FAST, "logger=none", *tiny(data_root), f"hydra.run.dir={run}"]
    assert _cli(args, monkeypatch)[0] == 0
    recorded = (run / ".hydra" / "config.yaml").read_text()
    code, err = _cli(args + ["seed=7"], monkeypatch)
    assert code == 2 and "already holds a run" in err and len(err.strip().splitlines()) == 1
    assert (run / ".hydra" / "config.yaml").read_text() == recorded


# ------------------------------------------------------------------ issue 10.8/10.13

def test_a_missing_data_root_is_an_error_and_is_not_created(tmp_path):
    missing = tmp_path / "nope"
    cfg = compose_train([*FAST, "logger=none", *tiny(missing)], tmp_path / "run")
    from salseg.data.errors import DataError

    with pytest.raises(Exception) as info:
        train(cfg)
    err = info.value
    while not isinstance(err, DataError) and err.__cause__ is not None:
        err = err.__cause__
    assert isinstance(err, DataError) and "data.root" in str(err)
    assert not missing.exists()


def test_progress_bar_can_be_disabled(data_root, tmp_path):
    cfg = compose_train([*FAST, "logger=none", *tiny(data_root)], tmp_path)
    assert cfg.trainer.enable_progress_bar is False and "progress_bar" in cfg.callbacks
    train(cfg)


# ------------------------------------------------------------------ issue 10.11: clear errors

@pytest.fixture()
def bad_inputs(tmp_path) -> dict[str, Path]:
    images, masks = tmp_path / "im", tmp_path / "gt"
    images.mkdir()
    masks.mkdir()
    import numpy as np
    from PIL import Image

    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(images / "a.jpg")
    (images / "b.jpg").write_bytes(b"not a jpeg")
    for stem in ("a", "b"):
        Image.fromarray(np.zeros((32, 32), np.uint8)).save(masks / f"{stem}.png")
    ckpt = tmp_path / "half.ckpt"
    ckpt.write_bytes(b"PK\x03\x04" + b"\x00" * 50)
    (tmp_path / "empty_root").mkdir()
    return {"images": images, "masks": masks, "ckpt": ckpt, "empty": tmp_path / "empty_root"}


@pytest.mark.parametrize("case,needle", [
    ("data_check", "b.jpg"),
    ("missing_folder", "DUTS"),
    ("custom_without_folders", "data.images"),
    ("batch_size", "data.batch_size"),
    ("lr", "model.optimizer.lr"),
    ("ckpt", "half.ckpt"),
    ("max_steps", "trainer.max_steps"),
])
def test_cli_errors_are_one_line_and_exit_2(case, needle, bad_inputs, data_root, tmp_path,
                                             monkeypatch):
    base = [*FAST, "logger=none", f"hydra.run.dir={tmp_path / 'run'}"]
    custom = ["data=custom", f"data.images={bad_inputs['images']}",
              f"data.masks={bad_inputs['masks']}", "data.num_workers=0"]
    args = {
        "data_check": custom,
        "missing_folder": ["data=duts", f"data.root={bad_inputs['empty']}"],
        "custom_without_folders": ["data=custom", f"data.root={bad_inputs['empty']}"],
        "batch_size": [*tiny(data_root), "data.batch_size=0"],
        "lr": [*tiny(data_root), "model.optimizer.lr=-1"],
        "ckpt": [*tiny(data_root), f"ckpt_path={bad_inputs['ckpt']}"],
        "max_steps": [*tiny(data_root), "trainer.max_steps=abc"],
    }[case]
    code, err = _cli(base + args, monkeypatch)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert lines[-1].startswith("salseg-train: error:") and needle in lines[-1], err
    assert "Traceback" not in err


def test_cli_debug_flag_shows_the_traceback(data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("SALSEG_DEBUG", "1")
    code, err = _cli([*FAST, "logger=none", *tiny(data_root), "data.batch_size=0",
                      f"hydra.run.dir={tmp_path / 'run'}"], monkeypatch)
    assert code == 1 and "ConfigError" in err and "salseg-train: error:" not in err
