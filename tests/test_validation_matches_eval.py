"""Training-time validation scores the same maps as ``salseg-eval`` model mode: the inputs come
from the model card's one ``Preprocessor`` and the predictions are restored and quantised as
``salseg-predict`` saves them, so ``val/maxF`` and ``val/mae`` of a checkpoint equal model mode's
``max_f`` and ``mae`` on the same data (same metric definitions: the ``u2net`` convention)."""
from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from salseg.data.datamodule import SegDataModule
from salseg.evaluation.model import evaluate_model
from salseg.predict.predictor import Predictor
from salseg.tasks import TrainingTask

SIZES = [(37, 53), (48, 40), (29, 61)]  # odd sizes: the restore step matters


def _write_set(folder: Path) -> None:
    rng = np.random.default_rng(3)
    (folder / "im").mkdir(parents=True)
    (folder / "gt").mkdir(parents=True)
    for i, (h, w) in enumerate(SIZES):
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        yy, xx = np.mgrid[:h, :w]
        mask = (((yy - h / 2) ** 2 + (xx - w / 3) ** 2) < (min(h, w) / 3) ** 2) * 255
        image[mask > 0] //= 2
        Image.fromarray(image).save(folder / "im" / f"s{i}.png")
        Image.fromarray(mask.astype(np.uint8)).save(folder / "gt" / f"s{i}.png")


def test_checkpoint_validation_equals_eval_model_mode(tmp_path):
    data = tmp_path / "set"
    _write_set(data)
    dm = SegDataModule(root=str(tmp_path), images=str(data / "im"), masks=str(data / "gt"),
                       val_images=str(data / "im"), val_masks=str(data / "gt"),
                       aug={"size": 32, "crop": None}, batch_size=2, val_batch_size=2,
                       verbose=False)
    torch.manual_seed(0)
    task = TrainingTask(name="u2netp", input_size=list(dm.recipe.input_size), val_convention="u2net")
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    val = trainer.validate(task, datamodule=dm, verbose=False)[0]
    ckpt = tmp_path / "model.ckpt"
    trainer.save_checkpoint(ckpt)

    predictor = Predictor(str(ckpt), device="cpu")
    assert predictor.preprocessor.size == tuple(dm.recipe.input_size)
    results, _ = evaluate_model(predictor, dm.evaluation_sets(), tmp_path / "eval",
                                convention="u2net", groups=["fmeasure", "mae"], batch_size=2,
                                workers=1, progress=False, plots=False, html=False)
    (summary,) = [s.summary for s in results[predictor.name].values()]
    assert val["val/maxF"] == pytest.approx(summary["max_f"], abs=1e-6)
    assert val["val/mae"] == pytest.approx(summary["mae"], abs=1e-6)
    assert 0.0 < summary["mae"] < 1.0
