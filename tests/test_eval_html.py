"""report.html without a browser: error overlay colours, gallery data (worst first is the
page's job, the values and thumbnails are ours), thumbnails on disk, html=false, no overwrite."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
from fixtures.predict.helpers import single_thread  # noqa: F401 - one torch thread per module
from PIL import Image

from salseg.evaluation import EvaluationError, evaluate_folders
from salseg.evaluation.html import (
    FN_COLOUR,
    FP_COLOUR,
    error_overlay,
    image_lookup,
    lower_is_better,
    render_report,
)
from salseg.evaluation.scoring import DatasetScores


def test_error_overlay_colours():
    gt = np.array([[255, 255, 0, 0]], np.uint8)
    pred = np.array([[255, 0, 255, 0]], np.uint8)  # TP, FN, FP, TN
    out = error_overlay(pred, gt, None)
    assert out[0, 2].tolist() == FP_COLOUR.astype(int).tolist()
    assert out[0, 1].tolist() == FN_COLOUR.astype(int).tolist()
    assert out[0, 3].tolist() == [0, 0, 0]  # background stays dark
    assert out[0, 0, 0] == out[0, 0, 1] == out[0, 0, 2] > 0  # object stays grey
    half = error_overlay(np.array([[128]], np.uint8), np.array([[0]], np.uint8), None)
    assert 0 < half[0, 0, 0] < FP_COLOUR[0]  # soft errors in proportion


def test_metric_directions():
    assert lower_is_better("mae") and lower_is_better("hce") and lower_is_better("mae_bset")
    assert not lower_is_better("max_f") and not lower_is_better("sm")


def _data(page: str) -> dict:
    text = re.search(r'<script id="data" type="application/json">(.*?)</script>', page, re.S)
    return json.loads(text.group(1).replace("<\\/", "</"))


def test_render_report_inlines_values_and_escapes():
    rows = [{"name": "a</script>", "height": 2, "width": 2, "resized": False, "mae": 0.5,
             "sm": float("nan")}]
    summary = {"convention": "u2net", "n_images": 1, "max_f": 0.5, "mae": 0.5}
    page = render_report({"m": {"D": DatasetScores(summary, {}, rows)}}, None, plots=False)
    assert page.count("</script>") == 2  # the name cannot close the data element
    data = _data(page)
    assert data["methods"] == ["m"]
    ds = data["datasets"][0]
    assert ds["metrics"] == ["mae"] and ds["lower"] == ["mae"]  # NaN-only columns are dropped
    assert ds["items"][0]["n"] == "a</script>" and ds["items"][0]["v"] == [[0.5]]
    assert "pr_curve.png" not in page and "https://" not in page


def _dataset(root, n=4):
    rng = np.random.default_rng(0)
    gt_dir, pred_dir, im_dir = root / "set" / "gt", root / "pred" / "m", root / "set" / "im"
    for d in (gt_dir, pred_dir, im_dir):
        d.mkdir(parents=True)
    for i in range(n):
        g = np.zeros((30, 40), np.uint8)
        g[5:25, 8:30] = 255
        p = np.clip(g * 0.7 + rng.random((30, 40)) * 80 * (i + 1), 0, 255).astype(np.uint8)
        Image.fromarray(g).save(gt_dir / f"x{i}.png")
        Image.fromarray(p).save(pred_dir / f"x{i}.png")
        Image.fromarray(np.stack([g] * 3, -1)).save(im_dir / f"x{i}.jpg")
    return pred_dir, gt_dir, im_dir


def test_folder_mode_writes_report_and_thumbnails(tmp_path):
    pred_dir, gt_dir, im_dir = _dataset(tmp_path)
    assert image_lookup(None, gt_dir)("x1") == (im_dir / "x1.jpg", False)  # sibling im/
    out = tmp_path / "out"
    _, paths = evaluate_folders(pred_dir, gt_dir, out, progress=False, workers=1)
    page = paths["report.html"].read_text()
    data = _data(page)
    items = data["datasets"][0]["items"]
    assert [it["n"] for it in items] == ["x0", "x1", "x2", "x3"]
    for it in items:  # image | GT strip and prediction | errors strip
        base = Image.open(out / it["b"])
        pred = Image.open(out / it["t"][0])
        assert base.size == (2 * 40 + 3, 30) and pred.size == (2 * 40 + 3, 30)
    with pytest.raises(EvaluationError, match="report.html"):
        evaluate_folders(pred_dir, gt_dir, out, progress=False, workers=1)
    out2 = tmp_path / "out2"
    _, paths = evaluate_folders(pred_dir, gt_dir, out2, progress=False, workers=1, html=False)
    assert "report.html" not in paths and not (out2 / "report.html").exists()
    assert not (out2 / "report_files").exists()
    with pytest.raises(EvaluationError, match="image_dir"):
        evaluate_folders(pred_dir, gt_dir, tmp_path / "o3", progress=False, workers=1,
                         image_dir=tmp_path / "nope")


def test_render_is_one_pass_and_json_is_script_safe():
    """Issue 19.3 without a browser: a name holding ``%DATA%`` stays text (it used to splice the
    raw gallery JSON into the table) and the inlined JSON holds no ``<``, ``>``, ``&``, U+2028."""
    hostile = "%DATA%<img src=x onerror=alert(1)>&\u2028"
    rows = [{"name": hostile, "height": 2, "width": 2, "resized": False, "mae": 0.5}]
    summary = {"convention": "u2net", "n_images": 1, "max_f": 0.5, "mae": 0.5}
    page = render_report({hostile: {hostile: DatasetScores(summary, {}, rows)},
                          "m2": {hostile: DatasetScores(summary, {}, rows)}}, None,
                         plots=False, title=hostile)
    assert "<img src=x" not in page and "%DATA%&lt;img src=x" in page
    raw = re.search(r'<script id="data" type="application/json">(.*?)</script>', page,
                    re.S).group(1)
    assert not set(raw) & {"<", ">", "&", "\u2028", "\u2029"}
    data = json.loads(raw)
    assert data["methods"][0] == hostile and data["datasets"][0]["items"][0]["n"] == hostile
    assert '<meta http-equiv="Content-Security-Policy"' in page and "'unsafe-inline'" not in page
