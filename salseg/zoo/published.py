"""Published scores of the zoo's checkpoints, as data, and the paper-vs-measured report.

Only numbers whose source could be checked are recorded; every row says where it comes from.
Metric keys are those of salseg's reports (``max_f``, ``mae``, ``wf``, ``sm``, ``relax_fb``,
``mean_em``, ``hce``); a metric the source does not give is simply absent (shown as "–").

What is here (and what is not):

* U2-Net paper (Pattern Recognition 2020), Tables 3-4: only U2-Net's MAE on five SOD test
  sets, its S-measure on ECSSD (as recorded by the Papers-with-Code archive for the paper) and
  its maxF on DUTS-TE (quoted from the paper in the U-2-Net issue tracker) could be sourced.  The remaining U2-Net cells and the whole U2-NetP (U2-Net-dagger) rows are
  NOT recorded: take them from the paper's Tables 3-4 and add them here.
* DIS paper (ECCV 2022), Table 2: the U2-Net baseline on DIS-TE1..4 (all six metrics, as
  recorded by the Papers-with-Code archive for the benchmark); its DIS-VD row and the IS-Net rows
  are NOT recorded yet.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

PWC_U2NET = ("Papers-with-Code archive results for arXiv 2005.09007 (values of the U2-Net "
             "paper, Tables 3-4)")
PWC_DIS = ("Papers-with-Code archive benchmark dichotomous-image-segmentation-on-dis-te* for "
           "U2Net (values of the DIS paper, Table 2)")


@dataclass(frozen=True)
class PublishedRow:
    dataset: str
    scores: Mapping[str, float]
    source: str


def _u2net_dis(dataset: str, max_f: float, wf: float, mae: float, sm: float, em: float,
               hce: float) -> PublishedRow:
    return PublishedRow(dataset, {"max_f": max_f, "wf": wf, "mae": mae, "sm": sm,
                                  "mean_em": em, "hce": hce}, PWC_DIS)


TABLES: dict[str, tuple[PublishedRow, ...]] = {
    "u2net_paper/U2-Net": (
        PublishedRow("DUT-OMRON", {"mae": 0.054}, PWC_U2NET),
        PublishedRow("DUTS-TE", {"max_f": 0.873, "mae": 0.044},
                     PWC_U2NET + "; maxF 0.873 as quoted from the paper in xuebinqin/U-2-Net "
                     "issue #240"),
        PublishedRow("HKU-IS", {"mae": 0.031}, PWC_U2NET),
        PublishedRow("ECSSD", {"mae": 0.033, "sm": 0.927}, PWC_U2NET),
        PublishedRow("PASCAL-S", {"mae": 0.074}, PWC_U2NET),
    ),
    "u2net_paper/U2-NetP": (),
    "dis_paper/U2-Net": (
        _u2net_dis("DIS-TE1", 0.694, 0.601, 0.083, 0.760, 0.801, 224),
        _u2net_dis("DIS-TE2", 0.756, 0.668, 0.085, 0.788, 0.833, 490),
        _u2net_dis("DIS-TE3", 0.798, 0.707, 0.079, 0.809, 0.858, 965),
        _u2net_dis("DIS-TE4", 0.795, 0.705, 0.087, 0.807, 0.847, 3653),
    ),
    "dis_paper/IS-Net": (),
    "birefnet_paper/BiRefNet": (
        PublishedRow("DIS-VD", {"max_f": 0.891, "wf": 0.854, "sm": 0.898},
                     "BiRefNet paper (arXiv 2401.03407) / official README, DIS-VD, as quoted in "
                     "salseg issue 23; the DIS-TE1..4 rows are NOT recorded yet"),
    ),
}


def rows_for(key: str) -> tuple[PublishedRow, ...]:
    if key not in TABLES:
        raise KeyError(f"no published table {key!r}; known: {', '.join(TABLES)}")
    return TABLES[key]


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def published_rows(keys: tuple[str, ...] | list[str]) -> dict[str, tuple[str, PublishedRow]]:
    """Normalised dataset name -> (table key, row) for the given tables (first table wins)."""
    out: dict[str, tuple[str, PublishedRow]] = {}
    for key in keys:
        for row in rows_for(key):
            out.setdefault(_norm(row.dataset), (key, row))
    return out


METRICS = (("maxF", "max_f", ".3f"), ("MAE", "mae", ".3f"), ("wF", "wf", ".3f"),
           ("S", "sm", ".3f"), ("relaxFb", "relax_fb", ".3f"), ("E", "mean_em", ".3f"),
           ("HCE", "hce", ".0f"))


def comparison(keys: tuple[str, ...] | list[str],
               measured: Mapping[str, Mapping[str, float]]) -> list[dict]:
    """Per measured dataset: measured, paper and difference (measured - paper) per metric."""
    table = published_rows(keys)
    out = []
    for dataset, summary in measured.items():
        hit = table.get(_norm(dataset))
        row = {"dataset": dataset, "table": hit[0] if hit else None,
               "source": hit[1].source if hit else None, "metrics": {}}
        for _, key, _ in METRICS:
            value = summary.get(key)
            paper = hit[1].scores.get(key) if hit else None
            if value is None and paper is None:
                continue
            row["metrics"][key] = {
                "measured": value, "paper": paper,
                "diff": None if value is None or paper is None else float(value) - paper}
        out.append(row)
    return out


def comparison_markdown(entry_name: str, rows: list[dict]) -> str:
    """A table with, for each dataset, the measured row, the paper row and the difference."""
    used = [(t, k, f) for t, k, f in METRICS if any(k in r["metrics"] for r in rows)]
    lines = [f"## Paper vs measured: {entry_name}", "",
             "Paper rows: only published numbers that could be sourced (see "
             "salseg/zoo/published.py); '–' = not recorded. diff = measured - paper.", ""]
    head = ["Dataset", "Row"] + [t for t, _, _ in used]
    lines += ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * len(used)]

    def cell(v, fmt, signed=False):
        if v is None:
            return "–"
        return format(v, ("+" if signed else "") + fmt)

    for r in rows:
        m = r["metrics"]
        for label, field, signed in (("measured", "measured", False), ("paper", "paper", False),
                                     ("diff", "diff", True)):
            cells = [r["dataset"] if label == "measured" else "", label]
            cells += [cell(m.get(k, {}).get(field), f, signed) for _, k, f in used]
            lines.append("| " + " | ".join(cells) + " |")
    sources = sorted({r["source"] for r in rows if r["source"]})
    if sources:
        lines += [""] + [f"- source: {s}" for s in sources]
    missing = [r["dataset"] for r in rows if r["table"] is None]
    if missing:
        lines += ["", f"- no published row recorded for: {', '.join(missing)}"]
    return "\n".join(lines) + "\n"
