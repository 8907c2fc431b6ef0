"""The metrics reproduce the reference tools on the 27 fixture pairs (tests/fixtures/metrics):
pysodmetrics 1.6.2, the U2-Net/BASNet Binary-Segmentation-Evaluation-Tool, DIS's HCE under
OpenCV 4.12 and DIS's validation maxF/MAE; per image, per dataset and curves. Real-valued metrics to
1e-6 (curves 1e-8), HCE exactly."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from salseg.metrics import MapPair, SaliencyMetrics, resize_to_gt
from salseg.metrics.e_measure import EMeasure
from salseg.metrics.fmeasure import (
    FMeasureDISValid,
    FMeasureMeanCurve,
    FMeasureMeanPR,
    dis_valid_inputs,
    dis_valid_pr_f,
)
from salseg.metrics.hce import hce_of_pair
from salseg.metrics.relax_boundary_f import relax_boundary_f

FIX = Path(__file__).parent / "fixtures" / "metrics"
EXPECTED = json.loads((FIX / "expected.json").read_text())
CURVES = json.loads((FIX / "expected_curves_per_image.json").read_text())
NAMES = sorted(EXPECTED["per_image"])
TOL = 1e-6
CURVE_TOL = 1e-8


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """Per-image metric ops are tiny: one intra-op thread is faster (and robust on a busy box)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def load_pair(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    gt = torch.from_numpy(np.array(Image.open(FIX / "pairs" / "gt" / f"{name}.png")))
    pred = torch.from_numpy(np.array(Image.open(FIX / "pairs" / "pred" / f"{name}.png")))
    return resize_to_gt(pred, tuple(gt.shape)), gt


@pytest.fixture(scope="module")
def pairs() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {n: load_pair(n) for n in NAMES}


@pytest.fixture(scope="module")
def scores(pairs):
    """Every metric's contribution for every pair, computed once."""
    metrics = SaliencyMetrics().metrics
    return {n: {k: m.score_pair(MapPair(*pairs[n])) for k, m in metrics.items()} for n in NAMES}


@pytest.fixture(scope="module")
def rows(scores):
    out = {}
    for n, sc in scores.items():
        row = {}
        for s in sc.values():
            row.update(s.row)
        out[n] = row
    return out


@pytest.fixture(scope="module")
def datasets(pairs, scores):
    out = {}
    for subset in ("all", "core"):
        names = EXPECTED["dataset"][subset]["images"]
        res = {}
        for conv in ("u2net", "dis"):
            m = SaliencyMetrics(convention=conv)
            for n in names:
                m.update_pair(MapPair(*pairs[n]), precomputed=scores[n])
            res[conv] = m.compute()
        out[subset] = res
    return out


def close(a, b, tol=TOL) -> bool:
    return bool(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))) <= tol)


def test_fixture_set_is_complete():
    assert len(NAMES) == 27
    assert EXPECTED["meta"]["hce_opencv"] == "4.12.0"


@pytest.mark.parametrize("name", NAMES)
def test_per_image_values(pairs, rows, name):
    exp = EXPECTED["per_image"][name]
    pred, gt = pairs[name]
    assert list(gt.shape) == exp["gt_shape_hw"] == list(pred.shape)
    row = rows[name]
    ps = exp["pysodmetrics"]
    for ours, theirs in [
        ("max_f", "max_f"), ("mean_f", "mean_f"), ("adp_f", "adaptive_f"), ("mae", "mae"),
        ("wf", "weighted_f"), ("sm", "s_measure"), ("mean_em", "mean_e"), ("max_em", "max_e"),
        ("adp_em", "adaptive_e"),
    ]:
        assert close(row[ours], ps[theirs]), (name, ours, row[ours], ps[theirs])
    assert close(row["mae_bset"], exp["bset"]["mae"])
    assert close(row["mae_dis_valid"], exp["dis_valid"]["mae"])
    assert close(row["max_f_dis_valid"], exp["dis_valid"]["max_f_per_image"])
    assert close(row["relax_fb"], exp["relax_fb"]["primary"]["f"])
    assert row["hce"] == exp["dis_hce"]["hce"]


@pytest.mark.parametrize("name", NAMES)
def test_per_image_curves(pairs, name):
    pair = MapPair(*pairs[name])
    exp = CURVES[name]
    mc = FMeasureMeanCurve().score_pair(pair).sums
    assert close(mc["sum_f"], exp["pysodmetrics"]["f"], CURVE_TOL)
    assert close(mc["sum_precision"], exp["pysodmetrics"]["precision"], CURVE_TOL)
    assert close(mc["sum_recall"], exp["pysodmetrics"]["recall"], CURVE_TOL)
    assert close(EMeasure().score_pair(pair).sums["sum_curve"], exp["pysodmetrics"]["e"], 1e-6)
    pr = FMeasureMeanPR().score_pair(pair).sums
    assert close(pr["sum_precision"], exp["bset"]["precision"], CURVE_TOL)
    assert close(pr["sum_recall"], exp["bset"]["recall"], CURVE_TOL)
    # IS-Net validation F curve (float32 in the reference, like here)
    _, _, f_dis = dis_valid_pr_f(*dis_valid_inputs(pair))
    assert close(f_dis.double().numpy(), exp["dis_valid"]["f"], 1e-7)
    dv = FMeasureDISValid()
    dv.update(*pairs[name])  # one image: F of its own P/R (with +1e-8) ~ its per-image F
    assert close(dv.compute()["f_curve"], exp["dis_valid"]["f"], 2e-4)


@pytest.mark.parametrize("name", NAMES)
def test_hce_parts_exact_both_binarisations(pairs, name):
    exp = EXPECTED["per_image"][name]
    pair = MapPair(*pairs[name])
    assert hce_of_pair(pair, "dis") == exp["dis_hce"]
    assert hce_of_pair(pair, "pysodmetrics")["hce"] == exp["pysodmetrics"]["hce"]


@pytest.mark.parametrize("name", NAMES)
def test_relax_fb_primary_details(pairs, name):
    pred, gt = pairs[name]
    pair = MapPair(pred, gt)
    got = relax_boundary_f(pair.p > 0.5, pair.gt)
    exp = EXPECTED["per_image"][name]["relax_fb"]["primary"]
    assert got["n_pred_boundary"] == exp["n_pred_boundary"]
    assert got["n_gt_boundary"] == exp["n_gt_boundary"]
    for k in ("precision", "recall", "f"):
        assert close(got[k], exp[k])


@pytest.mark.parametrize("subset", ["all", "core"])
def test_dataset_values(datasets, subset):
    exp = EXPECTED["dataset"][subset]
    ps, bset = exp["pysodmetrics"], exp["bset"]
    u2, dis = datasets[subset]["u2net"], datasets[subset]["dis"]
    assert u2["n_images"] == dis["n_images"] == exp["n"]
    # the two maxF conventions, named unambiguously
    assert close(u2["max_f"], bset["max_f"]) and close(u2["max_f_mean_pr"], bset["max_f"])
    assert close(u2["mean_f"], bset["mean_f"])
    assert u2["max_f_threshold"] == bset["argmax_f_threshold"]
    assert close(dis["max_f"], ps["max_f"]) and close(dis["max_f_mean_curve"], ps["max_f"])
    assert close(dis["mean_f"], ps["mean_f"])
    assert dis["max_f_threshold"] == ps["argmax_f_threshold"]
    for res in (u2, dis):
        assert close(res["max_f_mean_pr"], bset["max_f"])
        assert close(res["max_f_mean_curve"], ps["max_f"])
        assert close(res["adp_f"], ps["adaptive_f"])
        assert close(res["mae"], ps["mae"])
        assert close(res["mae_bset"], bset["mae"])
        assert close(res["wf"], ps["weighted_f"])
        assert close(res["sm"], ps["s_measure"])
        assert close(res["mean_em"], ps["mean_e"])
        assert close(res["max_em"], ps["max_e"])
        assert close(res["adp_em"], ps["adaptive_e"])
        assert close(res["relax_fb"], exp["relax_fb"]["primary"])
        assert close(res["hce"], exp["dis_hce"]["hce"], 1e-12)
        assert close(res["max_f_dis_valid"], exp["dis_valid"]["max_f"])
        assert close(res["mae_dis_valid"], exp["dis_valid"]["mae"])


@pytest.mark.parametrize("subset", ["all", "core"])
def test_dataset_curves(datasets, subset):
    exp = EXPECTED["dataset"][subset]
    res = datasets[subset]["dis"]
    mc, pr = res["curves"]["mean_curve"], res["curves"]["mean_pr"]
    pc = exp["pysodmetrics_curves"]
    assert close(mc["f"], pc["f"], CURVE_TOL)
    assert close(mc["precision"], pc["precision"], CURVE_TOL)
    assert close(mc["recall"], pc["recall"], CURVE_TOL)
    assert close(res["curves"]["em"], pc["e"], 1e-6)
    bc = exp["bset_curves"]
    assert close(pr["f"], bc["f"], CURVE_TOL)
    assert close(pr["precision"], bc["precision"], CURVE_TOL)
    assert close(pr["recall"], bc["recall"], CURVE_TOL)


def test_conventions_differ_on_real_like_data(datasets):
    res = datasets["all"]["u2net"]
    # BSET (mean P/R) and pysodmetrics (mean curve) differ by several points here
    assert res["max_f_mean_pr"] - res["max_f_mean_curve"] > 0.05


def test_update_equals_precomputed_scores(pairs, rows):
    """SaliencyMetrics.update (the public path) gives the rows the fixtures were checked on."""
    for name in ("blob_soft_a", "values_at_128", "size_mismatch_pred_half"):
        assert SaliencyMetrics().update(*pairs[name])[0] == rows[name]


def test_quirks(pairs, rows):
    def row(name, **kw):
        if kw:
            return SaliencyMetrics(convention="dis", groups=("hce",), **kw).update(*pairs[name])[0]
        return rows[name]

    # threshold 0 counts every pixel: an all-zero prediction still has maxF > 0
    assert close(row("pred_all_zero")["max_f"], 0.3276, 1e-4)
    r = row("empty_gt_zero_pred")
    assert r["adp_em"] == 0.0 and close(r["max_em"], 1.0000098, 1e-7)
    # min-max normalisation: low-contrast MAE 0.049 (pysodmetrics) vs 0.589 (U2-Net tool)
    r = row("low_contrast_pred")
    assert close(r["mae"], 0.049, 1e-3) and close(r["mae_bset"], 0.589, 1e-3)
    # a GT stored as 0/1 is empty for pysodmetrics (g > 128)
    r = row("gt_values_0_1")
    assert r["wf"] == 0.0
    # ties at 128: DIS HCE p > 128 vs pysodmetrics minmax(p) > 0.5
    assert row("values_at_128")["hce"] == 1
    assert row("values_at_128", hce_binarize="pysodmetrics")["hce"] == 22
    for name in NAMES:  # no NaN anywhere
        assert all(np.isfinite(v) for v in rows[name].values()), name


def test_float_inputs_equal_uint8_inputs(pairs):
    """Feeding p/255 floats (e.g. from a model) equals feeding the PNG's uint8 values."""
    pred, gt = pairs["blob_soft_a"]
    a = SaliencyMetrics(groups=("fmeasure", "mae", "sm", "em", "relax_fb")).update(pred, gt)[0]
    b = SaliencyMetrics(groups=("fmeasure", "mae", "sm", "em", "relax_fb")).update(
        pred.double() / 255, gt.float() / 255)[0]
    assert a == b
