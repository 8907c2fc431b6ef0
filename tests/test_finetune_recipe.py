"""``experiment=finetune`` (issue 18 item 3, issue 20 item 3): it refuses to start without
initial weights, scores the starting weights before the first step and keeps them as a
checkpoint candidate (the reported checkpoint is never worse on validation than the start), and
sizes its DataLoader workers to the machine."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from bn_probe import save_folded
from PIL import Image
from train_helpers import compose_train

from salseg.data.datamodule import resolve_num_workers
from salseg.data.synthetic import ensure_synthetic, make_spec
from salseg.predict.predictor import Predictor
from salseg.training import train
from salseg.training.checks import ConfigError
from salseg.weights.load import read_state_dict

ROOT = Path(__file__).resolve().parents[1]


class Sabotage(L.Callback):
    """Zero every weight at the end of each training epoch: training made the model worse."""

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        with torch.no_grad():
            for p in pl_module.model.parameters():
                p.zero_()


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    return ensure_synthetic(tmp_path_factory.mktemp("data"), make_spec(size=64, n_train=8, n_val=4),
                            verbose=False)


def _finetune(pairs: Path, weights: Path, out: Path, *overrides: str, val_masks: Path | None = None):
    return compose_train(["experiment=finetune", "model=u2netp", f"model.init_weights={weights}",
                          f"data.images={pairs}/train/im", f"data.masks={pairs}/train/gt",
                          f"data.val_images={pairs}/val/im", f"data.val_masks={val_masks or pairs / 'val/gt'}",
                          "data.batch_size=4", "data.num_workers=0", "data.check=header",
                          "aug.size=64", "trainer=cpu", "logger=none", "trainer.max_epochs=1",
                          "trainer.enable_progress_bar=false", "model.freeze_encoder_epochs=0",
                          *overrides], out)


@pytest.mark.slow  # 67 s; its deterministic set-up still fails once on a loaded machine: under review
def test_finetune_reports_the_start_when_training_makes_it_worse(pairs, tmp_path):
    weights = save_folded(tmp_path / "folded.safetensors")
    # validation masks = the starting weights' own binarised maps: the start scores maxF ~1,
    # the zeroed network (a constant map) far less, whatever the random weights
    predictor = Predictor(str(weights), model="u2netp", device="cpu", input_size=64)
    masks = tmp_path / "val_masks"
    masks.mkdir()
    for image in sorted((pairs / "val" / "im").iterdir()):
        mask = (predictor.predict(str(image)) > 127).astype(np.uint8) * 255
        Image.fromarray(mask).save(masks / f"{image.stem}.png")
    cfg = _finetune(pairs, weights, tmp_path / "run", "+callbacks.sabotage._target_=test_finetune_recipe.Sabotage",
                    val_masks=masks)
    best = train(cfg)
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    start = tmp_path / "run" / "checkpoints" / "start.ckpt"
    assert summary["start_checkpoint"] == str(start) and start.is_file()
    assert summary["reported_checkpoint"] == str(start) == summary["best_checkpoint"]
    assert summary["start_val_maxF"] > 0.9 > summary["trained_best_val_maxF"]
    assert best == summary["best_val_maxF"] == summary["start_val_maxF"]
    assert "start.ckpt" in summary["selection"]["rule"]
    assert summary["metrics"]["start/val/maxF"] == pytest.approx(summary["start_val_maxF"])
    # start.ckpt holds exactly the weights the run started from, loadable as a project checkpoint
    original, saved = read_state_dict(weights), read_state_dict(start)
    assert original.keys() == saved.keys()
    assert all(torch.equal(original[k], saved[k]) for k in original)


def test_finetune_keeps_trained_weights_that_score_at_least_as_well(pairs, tmp_path):
    """With the weights effectively fixed (lr 1e-12), the trained checkpoint ties with the start
    and is the one reported (ties go to the trained weights)."""
    weights = save_folded(tmp_path / "folded.safetensors")
    train(_finetune(pairs, weights, tmp_path / "run", "model.optimizer.lr=1e-12"))
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["trained_best_val_maxF"] == summary["start_val_maxF"]
    assert Path(summary["reported_checkpoint"]).name.startswith("epoch")


def test_finetune_without_init_weights_is_refused(tmp_path):
    cfg = compose_train(["experiment=finetune", "data.images=x", "data.masks=y"], tmp_path / "a")
    with pytest.raises(ConfigError, match=r"model.init_weights.*model.init_weights=random"):
        train(cfg)
    # the explicit opt-out composes and builds a task from random weights
    cfg = compose_train(["experiment=finetune", "model=u2netp", "model.init_weights=random"], tmp_path / "b")
    from hydra.utils import instantiate

    from salseg.training import task_config

    assert not instantiate(task_config(cfg.model)).freeze_bn


def test_finetune_without_init_weights_from_the_command_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "experiment=finetune",
                           "data.images=x", "data.masks=y", f"hydra.run.dir={tmp_path / 'run'}"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert proc.returncode == 2, proc.stderr
    assert "model.init_weights" in proc.stderr and "Traceback" not in proc.stderr


def test_num_workers_auto_fits_the_machine(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert resolve_num_workers("auto") == 2
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert resolve_num_workers("auto") == 4
    assert resolve_num_workers(3) == 3
    with pytest.raises(ValueError, match="num_workers"):
        resolve_num_workers("many")


def test_finetune_recipe_sizes_workers_to_the_machine(tmp_path):
    from hydra.utils import instantiate

    cfg = compose_train(["experiment=finetune", "model.init_weights=u2netp"], tmp_path)
    assert cfg.data.num_workers == "auto"
    datamodule = instantiate(cfg.data)
    assert 1 <= datamodule.num_workers <= min(4, len(os.sched_getaffinity(0)))
