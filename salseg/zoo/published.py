"""The papers' published scores, as data, and the paper-vs-measured reports.

The numbers live in ``published.csv`` beside this module (package data): one row per (paper,
method, dataset) of the U2-Net paper's Tables 3-4 (U2-Net, U2-NetP = U2-Net-dagger, and the
Amulet / DSS+ / PiCANet rows on SOD) and of the DIS paper's Table 2 (IS-Net, U2-Net, BASNet,
HRNet, PFNet on DIS-VD, DIS-TE1..4 and the "Overall" row DIS-TE(1-4)).  Every row names where
it was read (``source``, the official repositories' images of the tables) and, where one was
found, an independent copy that agrees (``second_source``).  A metric the table has no column
for is empty.  docs/zoo.md says which measured model each published row belongs to.

One documented conflict: U2-Net, ECSSD, S-measure is .928 in the paper's own table image and
.927 in the Papers-with-Code archive.  The project records .928: the image is the paper's table
itself, the archive a later transcription (every other U2-Net cell the archive holds agrees with
the image); the other value is kept in the row's ``second_source``.

The DIS "Overall DIS-TE(1-4)" row is the mean of the four per-set scores (:func:`overall`): the
published overall rows equal the means of the published TE1..TE4 rows to rounding (a test).

Metric keys are those of salseg's reports: ``max_f``, ``mae``, ``wf``, ``sm``, ``relax_fb``,
``mean_em``, ``hce``.  Differences are ``measured - paper`` with the measured value first
rounded as the paper prints it (3 decimals, HCE to an integer), so that every shown row adds up.
"""
from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources

DATA_FILE = "published.csv"
CSV_COLUMNS = ("paper", "table", "method", "dataset", "max_f", "mae", "wf", "sm", "relax_fb",
               "mean_em", "hce", "source", "second_source")
# (title, key, format, higher is better)
METRICS = (("maxF", "max_f", ".3f", True), ("MAE", "mae", ".3f", False),
           ("wF", "wf", ".3f", True), ("S", "sm", ".3f", True),
           ("relaxFb", "relax_fb", ".3f", True), ("E", "mean_em", ".3f", True),
           ("HCE", "hce", ".0f", False))
METRIC_KEYS = tuple(k for _, k, _, _ in METRICS)
# column order of each paper's tables (others: METRICS order)
PAPER_ORDER = {"u2net_paper": ("max_f", "mae", "wf", "sm", "relax_fb"),
               "dis_paper": ("max_f", "wf", "mae", "sm", "mean_em", "hce")}
DIS_TE = ("DIS-TE1", "DIS-TE2", "DIS-TE3", "DIS-TE4")
OVERALL = "DIS-TE(1-4)"  # the DIS paper's "Overall" row: the mean of DIS-TE1..4
PAPERS = {
    "u2net_paper": "U2-Net paper (Qin et al., Pattern Recognition 106, 2020), Tables 3-4",
    "dis_paper": "DIS paper (Qin et al., ECCV 2022), Table 2",
}


@dataclass(frozen=True)
class PublishedRow:
    """One published row: a method's scores on one dataset, with its source."""

    dataset: str
    scores: Mapping[str, float]
    source: str
    paper: str = ""
    table: str = ""
    method: str = ""
    second_source: str = ""

    @property
    def key(self) -> str:
        """The table key ``<paper>/<method>`` (what zoo entries and reproduce configs name)."""
        return f"{self.paper}/{self.method}"


def parse_csv(text: str, where: str = DATA_FILE) -> list[PublishedRow]:
    """The rows of a published-scores CSV (the columns of :data:`CSV_COLUMNS`)."""
    reader = csv.DictReader(io.StringIO(text))
    if tuple(reader.fieldnames or ()) != CSV_COLUMNS:
        raise ValueError(f"{where}: columns {reader.fieldnames}, expected {list(CSV_COLUMNS)}")
    rows = []
    for line, rec in enumerate(reader, start=2):
        try:
            scores = {k: float(rec[k]) for k in METRIC_KEYS if rec[k].strip()}
        except ValueError as exc:
            raise ValueError(f"{where}, line {line}: {exc}") from None
        if not rec["source"].strip():
            raise ValueError(f"{where}, line {line}: the row names no source")
        rows.append(PublishedRow(dataset=rec["dataset"], scores=scores, source=rec["source"],
                                 paper=rec["paper"], table=rec["table"], method=rec["method"],
                                 second_source=rec["second_source"]))
    return rows


def load_rows() -> list[PublishedRow]:
    """The project's published rows (``salseg/zoo/published.csv``), in file order."""
    text = resources.files(__package__).joinpath(DATA_FILE).read_text(encoding="utf-8")
    return parse_csv(text)


def _tables(rows: Iterable[PublishedRow]) -> dict[str, tuple[PublishedRow, ...]]:
    out: dict[str, list[PublishedRow]] = {}
    for row in rows:
        out.setdefault(row.key, []).append(row)
    return {k: tuple(v) for k, v in out.items()}


ROWS: tuple[PublishedRow, ...] = tuple(load_rows())
# rows from sources other than the shared tables (published.csv stays their exact copy)
EXTRA_ROWS: tuple[PublishedRow, ...] = (
    PublishedRow("DIS-VD", {"max_f": 0.891, "wf": 0.854, "sm": 0.898},
                 "BiRefNet paper (arXiv 2401.03407), Table 1 / official README, DIS-VD",
                 paper="birefnet_paper", table="1", method="BiRefNet"),
)
TABLES: dict[str, tuple[PublishedRow, ...]] = _tables(ROWS + EXTRA_ROWS)


def rows_for(key: str) -> tuple[PublishedRow, ...]:
    """The rows of one table key (``<paper>/<method>``)."""
    if key not in TABLES:
        raise KeyError(f"no published table {key!r}; known: {', '.join(TABLES)}")
    return TABLES[key]


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def published_rows(keys: Sequence[str]) -> dict[str, tuple[str, PublishedRow]]:
    """Normalised dataset name -> (table key, row) for the given tables (first table wins)."""
    out: dict[str, tuple[str, PublishedRow]] = {}
    for key in keys:
        for row in rows_for(key):
            out.setdefault(_norm(row.dataset), (key, row))
    return out


def overall(per_set: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """The DIS paper's overall DIS-TE(1-4) scores: per metric, the mean of the four per-set
    scores; a metric missing from any of the four sets is left out (``{}`` without all four)."""
    by_norm = {_norm(k): v for k, v in per_set.items()}
    sets = [by_norm.get(_norm(name)) for name in DIS_TE]
    if any(s is None for s in sets):
        return {}
    out = {}
    for key in METRIC_KEYS:
        values = [s.get(key) for s in sets]
        if all(v is not None for v in values):
            out[key] = sum(float(v) for v in values) / len(values)
    return out


def _places(key: str) -> int:
    return 0 if key == "hce" else 3


def rounded(key: str, value: float) -> float:
    """``value`` rounded as the papers print metric ``key`` (3 decimals; HCE an integer)."""
    return round(float(value), _places(key))


def difference(key: str, measured: float | None, paper: float | None) -> float | None:
    """``measured - paper``, the measured value first rounded as the paper prints it."""
    if measured is None or paper is None:
        return None
    diff = round(rounded(key, measured) - paper, _places(key))
    return 0.0 if diff == 0 else diff  # never "-0.000"


def comparison(keys: Sequence[str], measured: Mapping[str, Mapping[str, float]]) -> list[dict]:
    """The measured row, the paper row and the difference, for every dataset of the tables
    ``keys`` (in table order; a dataset that was not measured has empty measured cells) and
    every metric the paper has; datasets measured but not in the tables follow, without paper
    cells.  The DIS overall row is computed from the four measured DIS-TE sets."""
    table = published_rows(keys)
    measured_by_norm = {_norm(name): (name, summary) for name, summary in measured.items()}
    if _norm(OVERALL) in table:
        total = overall(measured)
        if total:
            measured_by_norm[_norm(OVERALL)] = (OVERALL, total)
    out = []
    for norm, (key, row) in table.items():
        name, summary = measured_by_norm.pop(norm, (row.dataset, {}))
        metrics = {}
        for metric in METRIC_KEYS:
            paper = row.scores.get(metric)
            if paper is None:
                continue  # the paper has no such column
            value = summary.get(metric)
            value = None if value is None else float(value)
            metrics[metric] = {"measured": value, "paper": paper,
                               "diff": difference(metric, value, paper)}
        out.append({"dataset": row.dataset, "table": key, "source": row.source,
                    "second_source": row.second_source, "measured_as": name if summary else None,
                    "metrics": metrics})
    for name, summary in measured_by_norm.values():
        out.append({"dataset": name, "table": None, "source": None, "second_source": None,
                    "measured_as": name,
                    "metrics": {m: {"measured": float(summary[m]), "paper": None, "diff": None}
                                for m in METRIC_KEYS if summary.get(m) is not None}})
    return out


def _columns(papers: Iterable[str], present: set[str]) -> list[tuple[str, str, str, bool]]:
    """The metrics in ``present``, in the column order of the (first) paper's tables."""
    by_key = {k: (t, k, f, hi) for t, k, f, hi in METRICS}
    order = next((PAPER_ORDER[p] for p in papers if p in PAPER_ORDER), ())
    keys = [k for k in order if k in present] + [k for k in METRIC_KEYS
                                                 if k in present and k not in order]
    return [by_key[k] for k in keys]


def _cell(value: float | None, fmt: str, signed: bool = False) -> str:
    if value is None:
        return "–"
    text = format(value, fmt)
    if signed and value > 0:
        text = "+" + text
    return text


def comparison_markdown(model: str, rows: list[dict]) -> str:
    """The measured, paper and diff rows per dataset (only the metrics the paper has)."""
    papers = [r["table"].split("/")[0] for r in rows if r["table"]]
    used = [(t, k, f) for t, k, f, _ in
            _columns(papers, {k for r in rows for k in r["metrics"]})]
    lines = [f"## Paper vs measured: {model}", "",
             "diff = measured - paper, with the measured value rounded as the paper prints it "
             "(salseg/zoo/published.csv holds the paper rows and their sources). '–': not "
             f"measured, or no such column in the paper. {OVERALL}: the mean of the four "
             "DIS-TE sets, as the paper's Overall row.", ""]
    head = ["Dataset", "Row"] + [t for t, _, _ in used]
    lines += ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * len(used)]
    for r in rows:
        m = r["metrics"]
        for label, signed in (("measured", False), ("paper", False), ("diff", True)):
            cells = [r["dataset"] if label == "measured" else "", label]
            cells += [_cell(m[k][label], f, signed) if k in m else "–" for _, k, f in used]
            lines.append("| " + " | ".join(cells) + " |")
    sources = sorted({r["source"] for r in rows if r["source"]})
    lines += [""] + [f"- paper rows: {s}" for s in sources]
    missing = [r["dataset"] for r in rows if r["table"] is None]
    if missing:
        lines.append(f"- no published row for: {', '.join(missing)}")
    return "\n".join(lines) + "\n"


@dataclass
class Ranked:
    """One line of a leaderboard: a method's scores on one dataset."""

    method: str
    scores: Mapping[str, float]
    measured: bool = False
    notes: list[str] = field(default_factory=list)


def leaderboard(key: str, measured: Mapping[str, Mapping[str, float]], label: str
                ) -> dict[str, list[Ranked]]:
    """Per dataset of table ``key``: the paper's methods on that dataset (every table of the
    same paper) and the measured row ``label``, sorted by maxF (best first)."""
    paper = rows_for(key)[0].paper
    measured_by_norm = {_norm(n): s for n, s in measured.items()}
    total = overall(measured)
    if total:
        measured_by_norm[_norm(OVERALL)] = total
    out: dict[str, list[Ranked]] = {}
    for row in rows_for(key):
        lines = [Ranked(other.method, other.scores) for other in ROWS
                 if other.paper == paper and _norm(other.dataset) == _norm(row.dataset)]
        mine = measured_by_norm.get(_norm(row.dataset))
        if mine:
            lines.append(Ranked(label, {k: float(v) for k, v in mine.items()
                                        if k in METRIC_KEYS and v is not None}, measured=True))
        lines.sort(key=lambda r: -r.scores.get("max_f", float("-inf")))
        out[row.dataset] = lines
    return out


def leaderboard_markdown(key: str, measured: Mapping[str, Mapping[str, float]], label: str
                         ) -> str:
    """:func:`leaderboard` as markdown tables (rounded as the paper prints them)."""
    paper = rows_for(key)[0].paper
    board = leaderboard(key, measured, label)
    used = _columns([paper], {k for r in rows_for(key) for k in r.scores})
    lines = [f"## Among the paper's methods: {label}", "",
             f"{PAPERS.get(paper, paper)}; the measured row in bold, sorted by maxF. "
             "Arrows: higher / lower is better.", ""]
    for dataset, ranked in board.items():
        head = ["#", "Method"] + [f"{t} {'↑' if hi else '↓'}" for t, _, _, hi in used]
        lines += [f"### {dataset}", "", "| " + " | ".join(head) + " |",
                  "|---:|---|" + "---:|" * len(used)]
        for i, r in enumerate(ranked, 1):
            cells = [_cell(r.scores.get(k), f) for _, k, f, _ in used]
            name = f"**{r.method} (measured)**" if r.measured else r.method
            if r.measured:
                cells = [f"**{c}**" if c != "–" else c for c in cells]
            lines.append("| " + " | ".join([str(i), name, *cells]) + " |")
        lines.append("")
    return "\n".join(lines)
