"""``experiment=finetune`` (issue 18 item 3, issue 20 item 3): it refuses to start without
initial weights, scores the starting weights before the first step and keeps them as a
checkpoint candidate (the reported checkpoint is never worse on validation than the start), and
sizes its DataLoader workers to the machine."""
from __future__ import annotations

import copy
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

from salseg.data.options import resolve_num_workers
from salseg.data.synthetic import ensure_synthetic, make_spec
from salseg.predict.predictor import Predictor
from salseg.training import train
from salseg.training.checks import ConfigError
from salseg.weights.load import read_state_dict

ROOT = Path(__file__).resolve().parents[1]


class Sabotage(L.Callback):
    """Zero every weight after each optimizer step: training made the model worse.  (After the
    step, not at the end of the epoch: Lightning validates before ``on_train_epoch_end``, so a
    callback there would damage only ``last.ckpt`` and the validation would score the really
    trained weights, a score that happened to lie near any fixed bound.)  The zeroed network
    outputs one constant map."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        with torch.no_grad():
            for p in pl_module.model.parameters():
                p.zero_()


class Undo(L.Callback):
    """Put the starting weights back after each optimizer step: training changed nothing."""

    def on_train_start(self, trainer, pl_module) -> None:
        self.start = copy.deepcopy(pl_module.model.state_dict())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        pl_module.model.load_state_dict(self.start)


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


def test_finetune_reports_the_start_when_training_makes_it_worse(pairs, tmp_path):
    weights = save_folded(tmp_path / "folded.safetensors")
    # validation masks = the starting weights' own maps above one level, the 80th percentile of
    # all their pixels (one level for all images: maxF takes one threshold for the mean P/R
    # curves): the start scores maxF ~1; a constant map (the zeroed network) scores at most the
    # F-measure of calling every pixel foreground, 1.3 p / (0.3 p + 1) <= 0.25 for the mean
    # foreground share p <= 0.2
    predictor = Predictor(str(weights), model="u2netp", device="cpu", input_size=64)
    images = sorted((pairs / "val" / "im").iterdir())
    maps = [predictor.predict(str(image)) for image in images]
    level = np.percentile(np.stack(maps), 80)
    masks = tmp_path / "val_masks"
    masks.mkdir()
    for image, saliency in zip(images, maps, strict=True):
        mask = saliency > level
        assert 0.05 < mask.mean() < 0.5, image  # a spread map, no large tie at the level
        Image.fromarray(mask.astype(np.uint8) * 255).save(masks / f"{image.stem}.png")
    assert np.mean([m > level for m in maps]) <= 0.2
    cfg = _finetune(pairs, weights, tmp_path / "run", "+callbacks.sabotage._target_=test_finetune_recipe.Sabotage",
                    "trainer.limit_train_batches=1", val_masks=masks)
    best = train(cfg)
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    start = tmp_path / "run" / "checkpoints" / "start.ckpt"
    assert summary["start_checkpoint"] == str(start) and start.is_file()
    assert summary["reported_checkpoint"] == str(start) == summary["best_checkpoint"]
    assert summary["start_val_maxF"] > 0.9 and summary["trained_best_val_maxF"] < 0.3
    assert best == summary["best_val_maxF"] == summary["start_val_maxF"]
    assert "start.ckpt" in summary["selection"]["rule"]
    assert summary["metrics"]["start/val/maxF"] == pytest.approx(summary["start_val_maxF"])
    # start.ckpt holds exactly the weights the run started from, loadable as a project checkpoint
    original, saved = read_state_dict(weights), read_state_dict(start)
    assert original.keys() == saved.keys()
    assert all(torch.equal(original[k], saved[k]) for k in original)


def test_finetune_keeps_trained_weights_that_score_at_least_as_well(pairs, tmp_path):
    """With the weights put back after every step (the validation scores the very weights of the
    start on the same batches), the trained checkpoint ties with the start exactly and is the
    one reported (ties go to the trained weights).  (A tiny learning rate such as 1e-12 would
    still move the zero BatchNorm shifts: the tie would rest on no pixel crossing a threshold.)"""
    weights = save_folded(tmp_path / "folded.safetensors")
    train(_finetune(pairs, weights, tmp_path / "run", "+callbacks.undo._target_=test_finetune_recipe.Undo",
                    "trainer.limit_train_batches=1"))
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
    assert 1 <= datamodule.loader.num_workers <= min(4, len(os.sched_getaffinity(0)))
