"""The papers' published scores (salseg/zoo/published.csv): complete, sourced, equal to the
reference copy when ../shared is there, the DIS overall rule checked on the published rows, and
the paper-vs-measured table built from synthetic measurements (signs, rounding, missing cells)."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from salseg.zoo import catalogue, published
from salseg.zoo.published import DIS_TE, OVERALL, ROWS, comparison, comparison_markdown

SHARED_CSV = (Path(__file__).resolve().parents[1] / ".." / "shared" / "reference" / "published"
              / "tables.csv")
SOD_SETS = ("DUT-OMRON", "DUTS-TE", "HKU-IS", "ECSSD", "PASCAL-S", "SOD")
DIS_SETS = ("DIS-VD", *DIS_TE, OVERALL)
SOD_METRICS = ("max_f", "mae", "wf", "sm", "relax_fb")
DIS_METRICS = ("max_f", "mae", "wf", "sm", "mean_em", "hce")


def _row(key: str, dataset: str) -> published.PublishedRow:
    (row,) = [r for r in published.rows_for(key) if r.dataset == dataset]
    return row


def test_project_copy_equals_the_reference_csv():
    if not SHARED_CSV.is_file():
        pytest.skip(f"no reference copy at {SHARED_CSV} (the shared reference folder is only "
                    "beside the development checkout); the project's own data is tested below")
    with open(SHARED_CSV, newline="", encoding="utf-8") as fh:
        reference = list(csv.DictReader(fh))
    assert len(reference) == len(ROWS)
    for ref, row in zip(reference, ROWS, strict=True):
        where = (ref["paper"], ref["method"], ref["dataset"])
        assert (row.paper, row.table, row.method, row.dataset) == (
            ref["paper"], ref["table"], ref["method"], ref["dataset"]), where
        assert row.source == ref["source"] and row.second_source == ref["second_source"], where
        for key in published.METRIC_KEYS:
            if ref[key].strip():
                assert row.scores[key] == float(ref[key]), (where, key)
            else:
                assert key not in row.scores, (where, key)


def test_every_table_is_complete_and_sourced():
    for key, sets, metrics in (("u2net_paper/U2-Net", SOD_SETS, SOD_METRICS),
                               ("u2net_paper/U2-NetP", SOD_SETS, SOD_METRICS),
                               ("dis_paper/IS-Net", DIS_SETS, DIS_METRICS),
                               ("dis_paper/U2-Net", DIS_SETS, DIS_METRICS),
                               ("dis_paper/BASNet", DIS_SETS, DIS_METRICS),
                               ("dis_paper/HRNet", DIS_SETS, DIS_METRICS),
                               ("dis_paper/PFNet", DIS_SETS, DIS_METRICS)):
        rows = published.rows_for(key)
        assert tuple(r.dataset for r in rows) == sets, key
        for r in rows:
            assert tuple(k for k in published.METRIC_KEYS if k in r.scores) == metrics, (key, r)
            assert r.source.startswith(("U-2-Net figures/", "DIS figures/")), (key, r)
    for method in ("Amulet", "DSS+", "PiCANet"):
        (row,) = published.rows_for(f"u2net_paper/{method}")
        assert row.dataset == "SOD" and set(row.scores) == set(SOD_METRICS)
    assert len(ROWS) == 45
    # what the zoo's checkpoints are compared with; the DIS U2-Net row is not the zoo's u2net
    assert catalogue.get_entry("u2net").published == ("u2net_paper/U2-Net",)
    assert catalogue.get_entry("u2netp").published == ("u2net_paper/U2-NetP",)
    assert catalogue.get_entry("isnet").published == ("dis_paper/IS-Net",)
    assert not any("dis_paper/U2-Net" in e.published for e in catalogue.entries())


def test_documented_conflict_u2net_ecssd_s():
    """The table image (the paper's own) says .928, the Papers-with-Code archive .927."""
    row = _row("u2net_paper/U2-Net", "ECSSD")
    assert row.scores["sm"] == 0.928
    assert "0.927" in row.second_source
    assert _row("u2net_paper/U2-NetP", "ECSSD").scores == {
        "max_f": 0.943, "mae": 0.041, "wf": 0.885, "sm": 0.918, "relax_fb": 0.808}


@pytest.mark.parametrize("method", ["IS-Net", "U2-Net", "BASNet", "HRNet", "PFNet"])
def test_published_overall_rows_are_the_means_of_the_four_test_sets(method):
    """The rule the reports use (the mean of DIS-TE1..4) reproduces every published overall
    row to rounding: per-set cells are rounded (mean off by <= half a unit) and so is the
    overall cell (<= half a unit), so at most one unit of the last digit."""
    key = f"dis_paper/{method}"
    per_set = {r.dataset: r.scores for r in published.rows_for(key) if r.dataset in DIS_TE}
    mean = published.overall(per_set)
    paper = _row(key, OVERALL).scores
    assert set(mean) == set(paper) == set(DIS_METRICS)
    for metric, value in paper.items():
        unit = 1.0 if metric == "hce" else 1e-3
        assert abs(mean[metric] - value) <= unit + 1e-9, (method, metric, mean[metric], value)
    # the median, the other natural summary, does not give the published rows
    if method == "IS-Net":
        hces = sorted(s["hce"] for s in per_set.values())
        assert abs((hces[1] + hces[2]) / 2 - paper["hce"]) > 100


def test_overall_needs_all_four_sets():
    full = {name: {"max_f": 0.5 + i / 10, "hce": 10.0 * i} for i, name in enumerate(DIS_TE)}
    assert published.overall(full) == pytest.approx({"max_f": 0.65, "hce": 15.0})
    assert published.overall({k: v for k, v in full.items() if k != "DIS-TE3"}) == {}
    partial = dict(full, **{"DIS-TE2": {"max_f": 0.6}})
    assert published.overall(partial) == pytest.approx({"max_f": 0.65})


def test_comparison_table_from_synthetic_measurements():
    """Signs, rounding (the measured value as the paper prints it) and missing cells."""
    measured = {
        "DIS-VD": {"max_f": 0.80049, "mae": 0.0744, "wf": 0.7, "sm": 0.81349,
                   "mean_em": 0.856, "hce": 1116.4},
        "DIS-TE1": {"max_f": 0.7396, "mae": 0.08, "wf": 0.662, "sm": 0.787, "mean_em": 0.82,
                    "hce": 149.6},
        "DIS-TE2": {"max_f": 0.8, "mae": 0.07, "wf": 0.728, "sm": 0.823, "mean_em": 0.858,
                    "hce": 340},
        "DIS-TE3": {"max_f": 0.83, "mae": 0.064, "wf": 0.758, "sm": 0.836, "mean_em": 0.883,
                    "hce": 687},
        # DIS-TE4 not measured: no overall row either
        "my-extra-set": {"max_f": 0.5},
    }
    rows = comparison(["dis_paper/IS-Net"], measured)
    assert [r["dataset"] for r in rows] == [*DIS_SETS, "my-extra-set"]
    vd = rows[0]["metrics"]
    assert set(vd) == set(DIS_METRICS)
    assert vd["max_f"] == {"measured": 0.80049, "paper": 0.791, "diff": 0.009}  # .800 - .791
    assert vd["mae"]["diff"] == 0.0  # .074 - .074: zero, never "-0.000"
    assert vd["wf"]["diff"] == -0.017  # .700 - .717
    assert vd["sm"]["diff"] == 0.0  # .813 - .813 (0.81349 rounds down)
    assert vd["hce"]["diff"] == 0.0  # 1116 - 1116
    te1 = rows[1]["metrics"]
    assert te1["max_f"]["diff"] == 0.0  # .740 - .740
    assert te1["hce"]["diff"] == 1.0  # 150 - 149
    assert te1["mae"]["diff"] == 0.006
    te4, total = rows[4]["metrics"], rows[5]["metrics"]
    for metrics in (te4, total):  # paper cells stay, measured and diff are empty
        assert all(m["measured"] is None and m["diff"] is None for m in metrics.values())
        assert all(m["paper"] is not None for m in metrics.values())
    extra = rows[6]
    assert extra["table"] is None and extra["metrics"] == {
        "max_f": {"measured": 0.5, "paper": None, "diff": None}}

    md = comparison_markdown("isnet", rows)
    lines = md.splitlines()
    assert lines[lines.index("| Dataset | Row | maxF | wF | MAE | S | E | HCE |") + 1] \
        == "|---|---|---:|---:|---:|---:|---:|---:|"
    assert "| DIS-VD | measured | 0.800 | 0.700 | 0.074 | 0.813 | 0.856 | 1116 |" in lines
    assert "|  | paper | 0.791 | 0.717 | 0.074 | 0.813 | 0.856 | 1116 |" in lines
    assert "|  | diff | +0.009 | -0.017 | 0.000 | 0.000 | 0.000 | 0 |" in lines
    assert "|  | diff | 0.000 | 0.000 | +0.006 | 0.000 | 0.000 | +1 |" in lines  # DIS-TE1
    assert "| DIS-TE4 | measured | – | – | – | – | – | – |" in lines
    assert "|  | paper | 0.799 | 0.726 | 0.070 | 0.819 | 0.858 | 1016 |" in lines  # overall
    assert "| my-extra-set | measured | 0.500 | – | – | – | – | – |" in lines
    assert "- no published row for: my-extra-set" in lines
    assert "- paper rows: DIS figures/quan-comp.png" in lines


def test_comparison_overall_row_is_the_mean_of_the_measured_sets():
    measured = {name: {"max_f": 0.7 + i / 100, "hce": 100.0 * (i + 1)}
                for i, name in enumerate(DIS_TE)}
    rows = {r["dataset"]: r for r in comparison(["dis_paper/U2-Net"], measured)}
    total = rows[OVERALL]["metrics"]
    assert total["max_f"]["measured"] == pytest.approx(0.715)
    assert total["max_f"]["diff"] == round(0.715 - 0.761, 3)  # -0.046
    assert total["hce"]["measured"] == 250.0 and total["hce"]["diff"] == 250 - 1333
    assert total["mae"]["measured"] is None and total["mae"]["paper"] == 0.083


def test_leaderboard_puts_the_measured_row_among_the_papers_methods_by_max_f():
    measured = {"SOD": {"max_f": 0.85, "mae": 0.11, "wf": 0.7, "sm": 0.77, "relax_fb": 0.6}}
    board = published.leaderboard("u2net_paper/U2-NetP", measured, "u2netp")
    assert list(board) == list(SOD_SETS)
    sod = board["SOD"]
    assert [r.method for r in sod] == ["U2-Net", "PiCANet", "u2netp", "DSS+", "U2-NetP",
                                       "Amulet"]
    assert [r.measured for r in sod].count(True) == 1
    assert [r.method for r in board["ECSSD"]] == ["U2-Net", "U2-NetP"]  # not measured
    md = published.leaderboard_markdown("u2net_paper/U2-NetP", measured, "u2netp")
    assert "| 3 | **u2netp (measured)** | **0.850** | **0.110** | **0.700** | **0.770** | " \
           "**0.600** |" in md
    assert "| 1 | U2-Net | 0.861 | 0.108 | 0.748 | 0.786 | 0.613 |" in md


def _eval_cfg(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    from salseg.config import CONFIG_DIR

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("eval", overrides=overrides)


def test_each_published_row_is_compared_with_its_own_model(tmp_path):
    """The reproduce recipes name their table; the DIS paper's U2-Net row belongs to a U2-Net
    trained on DIS5K (reproduce=u2net_dis5k ckpt=...), never to the zoo's SOD u2net."""
    from salseg.cli.eval import paper_tables, run
    from salseg.evaluation.errors import EvaluationError

    for recipe, table in (("u2net", "u2net_paper/U2-Net"), ("u2netp", "u2net_paper/U2-NetP"),
                          ("isnet", "dis_paper/IS-Net")):
        assert paper_tables(_eval_cfg([f"reproduce={recipe}"])) == ([table], recipe)
    cfg = _eval_cfg(["reproduce=u2net_dis5k", "ckpt=runs/u2net_dis5k/best.ckpt"])
    assert paper_tables(cfg) == (["dis_paper/U2-Net"], "u2net_dis5k")
    assert [t.split for t in cfg.data.test] == ["DIS-VD", *DIS_TE]
    with pytest.raises(EvaluationError, match="pass ckpt=<checkpoint>"):
        run(_eval_cfg(["reproduce=u2net_dis5k"]), tmp_path / "out")
    assert not (tmp_path / "out").exists()
    # the zoo's u2net scored on DIS5K: its table has no DIS set, so no paper cell appears
    keys, _ = paper_tables(_eval_cfg(["ckpt=u2net", "data=dis5k"]))
    rows = comparison(keys, {name: {"max_f": 0.7} for name in DIS_TE})
    assert all(m["paper"] is None for r in rows if r["dataset"] in DIS_TE
               for m in r["metrics"].values())
    with pytest.raises(EvaluationError, match="no published table 'dis_paper/Nope'"):
        paper_tables(_eval_cfg(["ckpt=x.pth", "data=dis5k", "paper_table=dis_paper/Nope"]))
