"""Model mode of salseg-eval: checkpoint + data config -> predictions -> the same reports as
folder mode, and the same numbers as predicting to PNGs and scoring the folder."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from salseg.cli.eval import run
from salseg.config import CONFIG_DIR
from salseg.evaluation import EvaluationError
from salseg.models import create_model


def _custom_set(tmp_path: Path, n: int = 3) -> tuple[Path, Path]:
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    g = torch.Generator().manual_seed(0)
    for i in range(n):
        h, w = 40 + 7 * i, 52 - 5 * i
        img = (torch.rand(h, w, 3, generator=g) * 255).to(torch.uint8).numpy()
        mask = torch.zeros(h, w, dtype=torch.uint8)
        mask[h // 4: 3 * h // 4, w // 3: 2 * w // 3] = 255
        Image.fromarray(img).save(images / f"im{i}.png")
        Image.fromarray(mask.numpy()).save(masks / f"im{i}.png")
    return images, masks


def _compose(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("eval", overrides=overrides)


def test_model_mode_equals_folder_mode_on_saved_predictions(tmp_path):
    images, masks = _custom_set(tmp_path)
    torch.manual_seed(0)
    weights = tmp_path / "u2netp.pth"
    torch.save(create_model("u2netp").state_dict(), weights)
    common = ["data=custom", f"data.images={images}", f"data.masks={masks}", "data.val_split=0",
              "progress=false", "workers=1", "input_size=[64,64]"]
    doc = run(_compose([f"ckpt={weights}", "model=u2netp", "save_predictions=true", *common]),
              tmp_path / "model_mode")
    (name, scores), = doc.items()
    assert scores["n_images"] == 3 and 0 <= scores["max_f"] <= 1
    for kind in ("metrics.json", "results.md", "pr_curve.png", "f_curve.png", "per_image.csv"):
        assert (tmp_path / "model_mode" / kind).is_file()
    saved = tmp_path / "model_mode" / "predictions" / name
    assert sorted(p.name for p in saved.iterdir()) == ["im0.png", "im1.png", "im2.png"]
    folder = run(_compose([f"pred_dir={saved}", f"gt_dir={masks}", f"dataset={name}",
                           "progress=false", "workers=1"]), tmp_path / "folder_mode")
    for key in ("max_f", "mae", "sm", "wf", "mean_em"):
        assert folder[name][key] == pytest.approx(scores[key], abs=1e-12)


def test_model_mode_errors(tmp_path):
    with pytest.raises(EvaluationError, match="needs model="):
        run(_compose(["random_weights=true", "data=synthetic"]), tmp_path / "a")
    with pytest.raises(EvaluationError, match="either ckpt"):
        run(_compose(["ckpt=x.pth", "data=synthetic", "pred_dir=y"]), tmp_path / "b")


def test_untrained_baseline_runs(tmp_path):
    images, masks = _custom_set(tmp_path, n=2)
    doc = run(_compose(["random_weights=true", "model=u2netp", "data=custom", f"data.images={images}",
                        f"data.masks={masks}", "progress=false", "workers=1", "plots=false",
                        "input_size=[64,64]"]), tmp_path / "out")
    assert json.loads((tmp_path / "out" / "metrics.json").read_text()) == doc
