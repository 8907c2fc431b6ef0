"""Evaluation reports, all written atomically (temporary file in the same folder + ``os.replace``)
and never over existing files unless asked:

* ``metrics.json`` - dataset -> metric -> value (one method) or method -> dataset -> metric -> value
  (several methods); every dataset entry says which maxF convention ``max_f`` uses;
* ``per_image.csv`` - one row per (method, dataset, image);
* ``curves.json`` - the dataset P/R/F/E curves (index = threshold) for re-plotting;
* ``results.md`` - a table laid out like the papers' tables (SOD: maxF, MAE, wF, S, relaxFb;
  DIS: maxF, wF, MAE, S, E, HCE), one table per maxF convention;
* ``report.html`` - results, curves and a per-image gallery, worst images first
  (:mod:`salseg.evaluation.html`; written when a gallery is given);
* ``pr_curve.png`` / ``f_curve.png`` - precision-recall and F-measure-threshold curves, one panel per
  dataset and one line per method (like the papers' figures), drawn with Matplotlib's Agg canvas.
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from salseg.atomic import OutputExistsError, write_bytes_atomic
from salseg.evaluation.errors import EvaluationError
from salseg.evaluation.scoring import DatasetScores
from salseg.metrics.conventions import CONVENTION_RECORDS, get_convention

REPORT_FILES = ("metrics.json", "per_image.csv", "curves.json", "results.md", "pr_curve.png",
                "f_curve.png", "report.html")
CONVENTION_TEXT = {name: c.description for name, c in CONVENTION_RECORDS.items()}
# (column title, key, higher is better, format)
SOD_COLUMNS = [("maxF", "max_f", True, ".3f"), ("MAE", "mae", False, ".3f"),
               ("wF", "wf", True, ".3f"), ("S", "sm", True, ".3f"),
               ("relaxFb", "relax_fb", True, ".3f")]
DIS_COLUMNS = [("maxF", "max_f", True, ".3f"), ("wF", "wf", True, ".3f"),
               ("MAE", "mae", False, ".3f"), ("S", "sm", True, ".3f"),
               ("E", "mean_em", True, ".3f"), ("HCE", "hce", False, ".0f")]
TABLE_COLUMNS = {"sod": SOD_COLUMNS, "dis": DIS_COLUMNS}  # by Convention.table

Results = dict[str, dict[str, DatasetScores]]  # method -> dataset -> scores


def atomic_write_bytes(path: Path, data: bytes, overwrite: bool = False) -> None:
    try:
        write_bytes_atomic(data, path, overwrite=overwrite)
    except OutputExistsError:
        raise EvaluationError(f"{path} exists; not overwriting it (pass overwrite=true)") from None


def atomic_write_text(path: Path, text: str, overwrite: bool = False) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), overwrite)


def check_free(out_dir: Path, overwrite: bool = False) -> None:
    """Fail early (before scoring) when a report file already exists."""
    taken = [name for name in REPORT_FILES if (Path(out_dir) / name).exists()]
    if taken and not overwrite:
        raise EvaluationError(f"{out_dir} already holds {', '.join(taken)}; not overwriting "
                              "(choose another output folder or pass overwrite=true)")


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def metrics_document(results: Results) -> dict[str, Any]:
    """metrics.json content: dataset -> metric -> value, nested under the method when several."""
    per_method = {
        method: {ds: {k: _clean(v) for k, v in sc.summary.items()} for ds, sc in datasets.items()}
        for method, datasets in results.items()
    }
    for datasets in per_method.values():
        for summary in datasets.values():
            summary["max_f_definition"] = CONVENTION_TEXT[summary["convention"]]
    if len(per_method) == 1:
        return next(iter(per_method.values()))
    return per_method


def per_image_csv(results: Results) -> str:
    rows = [{"method": m, "dataset": d, **r} for m, ds in results.items() for d, sc in ds.items()
            for r in sc.rows]
    columns: list[str] = []
    for r in rows:
        columns.extend(k for k in r if k not in columns)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue()


def results_markdown(results: Results, title: str = "Evaluation results") -> str:
    """Paper-style tables: rows = datasets (and methods), one table per maxF convention."""
    multi = len(results) > 1
    by_conv: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for method, datasets in results.items():
        for ds, sc in datasets.items():
            by_conv.setdefault(sc.summary["convention"], []).append((method, ds, sc.summary))
    lines = [f"# {title}", ""]
    for conv, entries in by_conv.items():
        record = get_convention(conv)
        columns = TABLE_COLUMNS[record.table]
        lines += [f"## {record.kind} ({record.paper} paper layout)", "",
                  f"maxF: {CONVENTION_TEXT[conv]}. MAE: pysodmetrics normalisation. "
                  "Arrows: higher / lower is better.", ""]
        head = (["Method"] if multi else []) + ["Dataset", "Images"]
        head += [f"{t} {'↑' if hi else '↓'}" for t, _, hi, _ in columns]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "|".join(["---"] * (len(head) - len(columns)) + ["---:"] * len(columns)) + "|")
        for method, ds, s in entries:
            cells = ([method] if multi else []) + [ds, str(s.get("n_images", ""))]
            for _, key, _, fmt in columns:
                v = s.get(key)
                cells.append("–" if v is None else format(v, fmt))
            lines.append("| " + " | ".join(cells) + " |")
        unusable = {(m, d): len(s.get("skipped_unusable") or []) for m, d, s in entries}
        notes = [f"{method}/{ds}: {s['n_skipped'] - unusable[method, ds]} unmatched files skipped"
                 for method, ds, s in entries if s.get("n_skipped", 0) > unusable[method, ds]]
        notes += [f"{method}/{ds}: {unusable[method, ds]} unusable maps skipped (listed in "
                  "metrics.json, skipped_unusable)" for method, ds, _ in entries
                  if unusable[method, ds]]
        notes += [f"{method}/{ds}: {s['n_resized']} predictions resized to the GT size (bilinear)"
                  for method, ds, s in entries if s.get("n_resized")]
        if notes:
            lines += [""] + [f"- {n}" for n in notes]
        lines.append("")
    return "\n".join(lines)


def _curve_for(sc: DatasetScores) -> dict[str, list[float]]:
    return sc.curves[get_convention(sc.summary["convention"]).curve]


def plot_curves(results: Results, kind: str) -> bytes:
    """PNG bytes of the PR curves (``kind="pr"``) or F-threshold curves (``kind="f"``): one panel
    per dataset, one line per method."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    datasets: list[str] = []
    for ds_map in results.values():
        datasets.extend(d for d in ds_map if d not in datasets)
    n = len(datasets)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(4.6 * cols, 4.2 * rows), dpi=110)
    FigureCanvasAgg(fig)
    for i, ds in enumerate(datasets):
        ax = fig.add_subplot(rows, cols, i + 1)
        for method, ds_map in results.items():
            if ds not in ds_map or "mean_pr" not in ds_map[ds].curves:
                continue
            sc = ds_map[ds]
            c = _curve_for(sc)
            label = method if len(results) > 1 else ds
            max_f = sc.summary.get("max_f")
            if max_f is not None:
                label = f"{label} (maxF {max_f:.3f})"
            if kind == "pr":
                ax.plot(c["recall"], c["precision"], linewidth=1.6, label=label)
            else:
                ax.plot(c["thresholds"], c["f"], linewidth=1.6, label=label)
        if kind == "pr":
            ax.set_xlabel("Recall")
            ax.set_ylabel("Precision")
            ax.set_xlim(0, 1.0)
            ax.set_ylim(0, 1.02)
        else:
            ax.set_xlabel("Threshold")
            ax.set_ylabel("F-measure")
            ax.set_xlim(0, 255)
            ax.set_ylim(0, 1.02)
        ax.set_title(ds)
        ax.grid(True, linestyle=":", linewidth=0.6)
        ax.legend(loc="lower left" if kind == "pr" else "lower center", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def write_reports(results: Results, out_dir: str | Path, plots: bool = True,
                  overwrite: bool = False, gallery: Any = None) -> dict[str, Path]:
    """Write every report file into ``out_dir``; returns their paths by name."""
    out = Path(out_dir)
    check_free(out, overwrite)
    paths = {name: out / name for name in REPORT_FILES}
    atomic_write_text(paths["metrics.json"], json.dumps(metrics_document(results), indent=2) + "\n",
                      overwrite)
    atomic_write_text(paths["per_image.csv"], per_image_csv(results), overwrite)
    curves = {m: {d: sc.curves for d, sc in ds.items()} for m, ds in results.items()}
    atomic_write_text(paths["curves.json"], json.dumps(curves) + "\n", overwrite)
    atomic_write_text(paths["results.md"], results_markdown(results), overwrite)
    if plots:
        atomic_write_bytes(paths["pr_curve.png"], plot_curves(results, "pr"), overwrite)
        atomic_write_bytes(paths["f_curve.png"], plot_curves(results, "f"), overwrite)
    else:
        del paths["pr_curve.png"], paths["f_curve.png"]
    if gallery is not None:  # salseg.evaluation.html.Gallery
        try:
            gallery.write(results, paths["report.html"], plots=plots, overwrite=overwrite)
        except OutputExistsError:
            raise EvaluationError(f"{paths['report.html']} exists; not overwriting it "
                                  "(pass overwrite=true)") from None
    else:
        del paths["report.html"]
    return paths
