"""Folder mode of salseg-eval: matching, on_error, several methods, reports (metrics.json, CSV,
results.md, curves.json, PNG plots), parallel HCE, no overwriting, the Hydra entry point."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures.predict.helpers import single_thread  # noqa: F401 - one torch thread per module
from hydra import compose, initialize_config_dir
from PIL import Image
from scipy import ndimage

from salseg.cli.eval import CONFIG_DIR, run
from salseg.evaluation import EvaluationError, evaluate_folders, match_folders, resolve_methods
from salseg.evaluation.io import read_map_u8
from salseg.metrics import RESULT_KEYS, SaliencyMetrics

REPO = Path(__file__).resolve().parent.parent




def make_dataset(root: Path, n: int = 5, size: tuple[int, int] = (48, 64)) -> tuple[Path, Path]:
    """GT folder + a method folder holding two methods (sharp and blurred)."""
    rng = np.random.default_rng(0)
    gt_dir = root / "DUTS-TE" / "gt"
    gt_dir.mkdir(parents=True)
    preds = root / "preds"
    for m in ("sharp", "blurry"):
        (preds / m).mkdir(parents=True)
    for i in range(n):
        g = ndimage.gaussian_filter(rng.random(size), 3) > 0.5
        Image.fromarray((g * 255).astype(np.uint8)).save(gt_dir / f"img{i}.png")
        for m, sigma in (("sharp", 1.0), ("blurry", 4.0)):
            p = ndimage.gaussian_filter(g.astype(float), sigma) * 0.9 + rng.random(size) * 0.1
            Image.fromarray((p * 255).astype(np.uint8)).save(preds / m / f"img{i}.png")
    return preds, gt_dir


def test_read_map_keeps_stored_values(tmp_path):
    a = np.array([[0, 1], [1, 0]], dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "m.png")
    assert read_map_u8(tmp_path / "m.png").tolist() == a.tolist()  # 0/1 GT stays 0/1
    Image.fromarray(np.stack([a * 255] * 3, -1)).save(tmp_path / "rgb.png")
    assert read_map_u8(tmp_path / "rgb.png").tolist() == (a * 255).tolist()
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(EvaluationError, match="bad.png: unreadable"):
        read_map_u8(tmp_path / "bad.png")


def test_resolve_methods(tmp_path):
    preds, gt = make_dataset(tmp_path, n=2)
    assert list(resolve_methods(preds)) == ["blurry", "sharp"]
    assert list(resolve_methods(preds / "sharp")) == ["sharp"]
    assert list(resolve_methods([str(preds / "sharp"), str(preds / "blurry")])) == ["sharp", "blurry"]
    with pytest.raises(EvaluationError, match="no prediction maps"):
        resolve_methods(_empty(tmp_path))


def _empty(tmp_path: Path) -> Path:
    d = tmp_path / "empty"
    d.mkdir()
    return d


def test_unmatched_names_strict_and_skip(tmp_path):
    preds, gt = make_dataset(tmp_path, n=4)
    (preds / "sharp" / "img1.png").unlink()
    Image.fromarray(np.zeros((48, 64), np.uint8)).save(preds / "sharp" / "extra.png")
    with pytest.raises(EvaluationError) as err:
        match_folders(preds / "sharp", gt, "strict")
    msg = str(err.value)
    assert "img1" in msg and "extra" in msg and "on_error=skip" in msg
    m = match_folders(preds / "sharp", gt, "skip")
    assert [p[0] for p in m.pairs] == ["img0", "img2", "img3"] and m.n_skipped == 2
    logs: list[str] = []
    results, _ = evaluate_folders(preds / "sharp", gt, tmp_path / "out", on_error="skip",
                                  workers=1, progress=False, log=logs.append)
    summary = results["sharp"]["DUTS-TE"].summary
    assert summary["n_images"] == 3 and summary["n_skipped"] == 2
    assert summary["skipped_missing_prediction"] == ["img1"]
    assert summary["skipped_missing_gt"] == ["extra"]
    assert any("skipped" in line for line in logs)
    assert "2 unmatched files skipped" in (tmp_path / "out" / "results.md").read_text()


def test_reports_several_methods(tmp_path):
    preds, gt = make_dataset(tmp_path, n=4)
    out = tmp_path / "out"
    results, paths = evaluate_folders(preds, gt, out, convention="dis", workers=2, progress=False)
    doc = json.loads(paths["metrics.json"].read_text())
    assert set(doc) == {"sharp", "blurry"}
    for method in ("sharp", "blurry"):
        entry = doc[method]["DUTS-TE"]
        assert set(RESULT_KEYS) <= set(entry)
        assert entry["convention"] == "dis" and "256 thresholds" in entry["max_f_definition"]
        assert entry["n_images"] == 4 and entry["hce"] is not None
        # the values equal SaliencyMetrics fed directly (HCE computed in worker processes)
        direct = SaliencyMetrics(convention="dis")
        for i in range(4):
            direct.update(torch.from_numpy(read_map_u8(preds / method / f"img{i}.png")),
                          torch.from_numpy(read_map_u8(gt / f"img{i}.png")))
        ref = direct.compute()
        for k in ("max_f", "max_f_mean_pr", "mae", "wf", "sm", "mean_em", "relax_fb", "hce"):
            assert entry[k] == pytest.approx(ref[k], abs=1e-12), k
    assert doc["sharp"]["DUTS-TE"]["max_f"] > doc["blurry"]["DUTS-TE"]["max_f"]
    rows = list(csv.DictReader(paths["per_image.csv"].open()))
    assert len(rows) == 8 and {"method", "dataset", "name", "max_f", "hce", "wf"} <= set(rows[0])
    md = paths["results.md"].read_text()
    assert "| Method | Dataset | Images | maxF ↑ | wF ↑ | MAE ↓ | S ↑ | E ↑ | HCE ↓ |" in md
    assert "DIS convention" in md
    curves = json.loads(paths["curves.json"].read_text())
    assert len(curves["sharp"]["DUTS-TE"]["mean_curve"]["f"]) == 256
    for name in ("pr_curve.png", "f_curve.png"):
        with Image.open(paths[name]) as im:
            assert im.format == "PNG" and im.size[0] > 300
    # never overwrite
    with pytest.raises(EvaluationError, match="not overwriting"):
        evaluate_folders(preds, gt, out, progress=False)


def test_single_method_sod_layout(tmp_path):
    preds, gt = make_dataset(tmp_path, n=3)
    _, paths = evaluate_folders(preds / "sharp", gt, tmp_path / "out", workers=1, progress=False)
    doc = json.loads(paths["metrics.json"].read_text())
    assert list(doc) == ["DUTS-TE"]  # dataset -> metric -> value
    entry = doc["DUTS-TE"]
    assert entry["convention"] == "u2net" and entry["max_f"] == entry["max_f_mean_pr"]
    assert entry["hce"] is None  # not in the SOD set
    md = paths["results.md"].read_text()
    assert "| Dataset | Images | maxF ↑ | MAE ↓ | wF ↑ | S ↑ | relaxFb ↑ |" in md
    assert "U2-Net / BASNet convention" in md


def test_hydra_entry_point_compose(tmp_path):
    preds, gt = make_dataset(tmp_path, n=2)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("eval", overrides=[f"pred_dir={preds / 'sharp'}", f"gt_dir={gt}",
                                         "progress=false", "workers=1", "metrics=[fmeasure,mae]"])
        doc = run(cfg, tmp_path / "out")
        assert doc["DUTS-TE"]["n_images"] == 2 and doc["DUTS-TE"]["wf"] is None
        cfg = compose("eval", overrides=["ckpt=model.ckpt"])
        with pytest.raises(EvaluationError, match="model mode needs a data config"):
            run(cfg, tmp_path / "out2")
        cfg = compose("eval")
        with pytest.raises(EvaluationError, match="pred_dir"):
            run(cfg, tmp_path / "out3")


@pytest.mark.slow
def test_cli_subprocess(tmp_path):
    preds, gt = make_dataset(tmp_path, n=2)
    out = tmp_path / "run"
    res = subprocess.run(
        [sys.executable, str(REPO / "eval.py"), f"pred_dir=[{preds / 'sharp'},{preds / 'blurry'}]",
         f"gt_dir={gt}", "convention=dis", "workers=2", f"hydra.run.dir={out}"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert {"metrics.json", "per_image.csv", "results.md", "pr_curve.png", "f_curve.png"} <= {
        p.name for p in out.iterdir()}
    bad = subprocess.run([sys.executable, str(REPO / "eval.py"), f"pred_dir={preds / 'sharp'}",
                          f"gt_dir={tmp_path}", f"hydra.run.dir={tmp_path / 'run2'}"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert bad.returncode == 2 and "no ground-truth maps" in bad.stderr
