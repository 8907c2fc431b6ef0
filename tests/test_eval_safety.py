"""salseg-eval on bad inputs (issue 10 items 5, 9, 10; issue 9 item 5): a refused re-run leaves the
kept run untouched (.hydra/ included), on_error=skip skips every unusable map and lists them all
(strict lists them all in its error), NaN float maps and transposed predictions are refused by
name, multi-frame files say that frame 0 is used, and one EXIF orientation policy holds for
images, GT masks and predictions."""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures.predict.helpers import single_thread  # noqa: F401 - one torch thread per module
from PIL import Image

from salseg.data.io import load_image, load_mask, read_image
from salseg.evaluation import EvaluationError, evaluate_folders
from salseg.evaluation.io import read_map_u8

ORIENTATION = 0x0112




def _square(h=24, w=32, top=4, left=6, size=10) -> np.ndarray:
    a = np.zeros((h, w), np.uint8)
    a[top:top + size, left:left + size] = 255
    return a


def _dataset(root: Path, names=("a", "b", "c", "d")) -> tuple[Path, Path]:
    gt, pred = root / "gt", root / "pred"
    gt.mkdir(parents=True)
    pred.mkdir()
    for i, n in enumerate(names):
        m = _square(left=2 + i)
        Image.fromarray(m).save(gt / f"{n}.png")
        Image.fromarray(m).save(pred / f"{n}.png")
    return pred, gt


# ---- issue 10 item 5: a refused re-run writes nothing --------------------------------------
def test_refused_rerun_keeps_the_recorded_config(tmp_path, monkeypatch, capsys):
    from hydra.core.global_hydra import GlobalHydra

    from salseg.cli.eval import main

    pred, gt = _dataset(tmp_path)
    run_dir = tmp_path / "run"

    def eval_main(*overrides):
        GlobalHydra.instance().clear()
        monkeypatch.setattr(sys, "argv", ["eval.py", f"pred_dir={pred}", f"gt_dir={gt}",
                                          f"hydra.run.dir={run_dir}", "progress=false",
                                          "plots=false", "workers=1", *overrides])
        try:
            main()
        except SystemExit as exit_:
            return exit_.code
        return 0

    assert eval_main("metrics=[fmeasure,mae]") == 0
    hydra_dir = run_dir / ".hydra"
    kept = {p.name: p.read_bytes() for p in hydra_dir.iterdir()}
    assert set(kept) == {"config.yaml", "hydra.yaml", "overrides.yaml"}
    assert b"metrics=[fmeasure,mae]" in kept["overrides.yaml"]
    metrics = (run_dir / "metrics.json").read_bytes()
    capsys.readouterr()
    assert eval_main("metrics=[mae]") == 2
    assert "not overwriting" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in hydra_dir.iterdir()} == kept
    assert (run_dir / "metrics.json").read_bytes() == metrics
    # overwrite=true replaces the reports and the recorded config together
    assert eval_main("metrics=[mae]", "overwrite=true") == 0
    assert b"metrics=[mae]" in (hydra_dir / "overrides.yaml").read_bytes()


# ---- issue 10 item 9: skip means skip, every bad file is listed ----------------------------
def _spoil(pred: Path) -> list[str]:
    (pred / "a.png").write_bytes(b"not an image")
    (pred / "b.png").write_bytes(b"")
    (pred / "c.png").unlink()
    nan = np.full((24, 32), 0.5, np.float32)
    nan[3, 4] = np.nan
    Image.fromarray(nan, mode="F").save(pred / "c.tif")
    return ["a.png", "b.png", "c.tif"]


def test_on_error_skip_skips_every_unusable_map(tmp_path):
    pred, gt = _dataset(tmp_path)
    bad = _spoil(pred)
    logged: list[str] = []
    results, paths = evaluate_folders(pred, gt, tmp_path / "out", dataset="ds", on_error="skip", workers=1,
                                      progress=False, plots=False, log=logged.append)
    summary = results["pred"]["ds"].summary
    assert summary["n_images"] == 1 and summary["n_skipped"] == 3
    assert len(summary["skipped_unusable"]) == 3
    text = "\n".join(logged)
    assert all(str(pred / b) in text for b in bad), text
    assert "NaN" in text
    doc = json.loads(paths["metrics.json"].read_text())
    assert len(doc["ds"]["skipped_unusable"]) == 3


def test_on_error_strict_lists_every_unusable_map(tmp_path):
    pred, gt = _dataset(tmp_path)
    bad = _spoil(pred)
    with pytest.raises(EvaluationError) as err:
        evaluate_folders(pred, gt, tmp_path / "out", workers=1, progress=False, plots=False)
    assert "3 map(s) cannot be scored" in str(err.value)
    assert all(str(pred / b) in str(err.value) for b in bad)
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_nan_float_map_is_refused_by_name(tmp_path):
    a = np.zeros((8, 8), np.float32)
    a[0, 0] = np.nan
    Image.fromarray(a, mode="F").save(tmp_path / "p.tif")
    with pytest.raises(EvaluationError, match=r"p\.tif: float map holds 1 NaN"):
        read_map_u8(tmp_path / "p.tif")


# ---- issue 10 item 10: transposed predictions, multi-frame files --------------------------
def test_transposed_prediction_is_refused_not_stretched(tmp_path):
    pred, gt = _dataset(tmp_path, names=("a", "b"))
    Image.fromarray(_square().T.copy()).save(pred / "a.png")  # 24x32 GT, 32x24 prediction
    Image.fromarray(_square(12, 16, 2, 3, 5)).save(pred / "b.png")  # smaller: resized, fine
    with pytest.raises(EvaluationError, match=r"a\.png: the prediction is 24x32 .* transposed"):
        evaluate_folders(pred, gt, tmp_path / "out", workers=1, progress=False, plots=False)
    results, _ = evaluate_folders(pred, gt, tmp_path / "out2", dataset="ds", on_error="skip", workers=1,
                                  progress=False, plots=False, log=lambda *_: None)
    summary = results["pred"]["ds"].summary
    assert summary["n_images"] == 1 and summary["n_resized"] == 1


def test_score_pairs_refuses_a_transposed_prediction():
    from salseg.evaluation.scoring import score_pairs

    gt = _square()
    with pytest.raises(ValueError, match="x: .* transposed"):
        score_pairs([("x", gt.T.copy(), gt)], groups=["mae"], workers=1, progress=False)


def _frames(path: Path, fmt: str) -> Path:
    first = _square()
    frames = [Image.fromarray(first), Image.fromarray(255 - first)]
    kw = {"duration": 100} if fmt in ("GIF", "PNG") else {}
    frames[0].save(path, format=fmt, save_all=True, append_images=frames[1:], **kw)
    return path


@pytest.mark.parametrize("fmt,suffix", [("GIF", "gif"), ("PNG", "png"), ("TIFF", "tif")])
def test_multi_frame_files_say_frame_0_is_used(tmp_path, caplog, fmt, suffix):
    path = _frames(tmp_path / f"anim.{suffix}", fmt)
    with Image.open(path) as im:
        assert im.n_frames == 2
    with caplog.at_level(logging.WARNING):
        arr = read_map_u8(path)
    assert (arr > 127).sum() == 100  # frame 0
    assert f"{path}: 2 frames" in caplog.text and "frame 0 is used" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        loaded = load_image(path)
        mask = load_mask(path)
    assert any("frame 0 used" in n for n in loaded.notes)
    assert any("frame 0 used" in n for n in mask.notes)
    assert (mask.array > 0.5).sum() == 100
    assert str(path) in caplog.text and "frame 0 used" in caplog.text


def test_single_frame_files_are_quiet(tmp_path, caplog):
    Image.fromarray(_square()).save(tmp_path / "one.png")
    with caplog.at_level(logging.WARNING):
        read_map_u8(tmp_path / "one.png")
        read_image(tmp_path / "one.png")
    assert "frame" not in caplog.text


# ---- issue 9 item 5: one EXIF orientation policy ------------------------------------------
def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    return exif


def _oriented_pair(root: Path) -> tuple[np.ndarray, Path, Path]:
    """An orientation-3 JPEG photo and its GT stored the same way (raw pixels upside down):
    the object is top-left as displayed."""
    shown = _square(24, 32, 2, 3, 10)  # displayed mask: top-left square
    raw = shown[::-1, ::-1].copy()  # orientation 3 = stored rotated by 180 degrees
    image = np.stack([raw, raw // 2, 255 - raw], axis=-1)
    img_path = root / "images" / "x.jpg"
    gt_path = root / "gt" / "x.png"
    img_path.parent.mkdir(parents=True)
    gt_path.parent.mkdir(parents=True)
    Image.fromarray(image).save(img_path, quality=100, exif=_exif(3))
    Image.fromarray(raw).save(gt_path, exif=_exif(3))
    return shown, img_path, gt_path


def test_images_masks_and_evaluation_maps_share_the_orientation(tmp_path):
    shown, img_path, gt_path = _oriented_pair(tmp_path)
    image = read_image(img_path)
    assert (image[..., 0] > 127).sum() == 100 and image[4:10, 5:11, 0].min() > 200
    np.testing.assert_array_equal(read_map_u8(gt_path), shown)  # GT in evaluation
    np.testing.assert_array_equal(load_mask(gt_path).array > 0.5, shown > 127)  # training
    # a mask JPEG with an orientation tag, and a prediction map with one
    Image.fromarray(shown[::-1, ::-1].copy()).save(tmp_path / "m.jpg", quality=100,
                                                   exif=_exif(3))
    assert np.abs(read_map_u8(tmp_path / "m.jpg").astype(int) - shown).max() < 40


def test_folder_mode_scores_a_prediction_against_an_oriented_gt(tmp_path):
    shown, _, gt_path = _oriented_pair(tmp_path)
    pred = tmp_path / "pred"
    pred.mkdir()
    Image.fromarray(shown).save(pred / "x.png")  # as salseg-predict saves it: displayed frame
    results, _ = evaluate_folders(pred, gt_path.parent, tmp_path / "out", dataset="ds",
                                  groups=["fmeasure", "mae"], workers=1, progress=False,
                                  plots=False)
    summary = results["pred"]["ds"].summary
    assert summary["mae"] == 0.0 and summary["max_f"] > 0.99


class _ChannelModel:
    """A stand-in predictor whose prediction is the image's red channel: it shows which frame
    the image was fed in."""

    name = "stub"

    def prepare(self, image: np.ndarray, gray: bool = False) -> torch.Tensor:
        return torch.from_numpy(image[..., 0].astype(np.float32) / 255.0)[None]

    def infer(self, batch: torch.Tensor) -> torch.Tensor:
        return batch

    def finish(self, prob: torch.Tensor, size) -> np.ndarray:
        return prob[0].numpy()


def test_model_mode_scores_an_oriented_jpeg_against_its_oriented_gt(tmp_path):
    from salseg.data.sources import Pair
    from salseg.evaluation.model import evaluate_model

    _, img_path, gt_path = _oriented_pair(tmp_path)
    results, _ = evaluate_model(_ChannelModel(), [("set", [Pair(str(img_path), str(gt_path),
                                                                "x")])],
                                tmp_path / "out", groups=["fmeasure", "mae"], batch_size=1,
                                workers=1, progress=False, plots=False)
    summary = results["stub"]["set"].summary
    assert summary["mae"] < 0.02 and summary["max_f"] > 0.99
