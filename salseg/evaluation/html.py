"""``report.html``: a self-contained evaluation report that opens from disk.

It holds the results table, the PR / F-measure curves (``pr_curve.png`` / ``f_curve.png`` next
to it) and a per-image gallery: for every image its thumbnail, the GT, and per method the
prediction with an error overlay (false positives red, false negatives blue; soft errors in
proportion) and the per-image values.  The gallery sorts by any metric of any method, worst
first by default, and shows one page at a time with lazily loaded thumbnails, so thousands of
images open in a browser in seconds.

Thumbnails are made while the images are scored (:meth:`Gallery.tap` wraps the stream of
``(name, prediction, GT)`` items, so no map is read twice) in background threads, and written
to ``report_files/`` beside ``report.html``; the per-image values are inlined as JSON.

Names in the report (methods, datasets, images) come from folder and file names, so they are
treated as hostile: the page is rendered in one pass (a ``%DATA%`` inside a name stays text),
every inserted value is escaped for its context (HTML text; JSON inside ``<script>`` with
``<``, ``>``, ``&``, U+2028 and U+2029 as ``\\u`` escapes) and the page's script only ever
sets ``textContent``.  A Content-Security-Policy meta tag allows nothing but the page's own
inline script and style (by their sha256) and images from the report's folder.
"""
from __future__ import annotations

import base64
import hashlib
import html
import json
import math
import re
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from salseg.atomic import write_bytes_atomic

ASSETS = "report_files"
THUMB = 160  # thumbnail height (and maximum width) in pixels
FP_COLOUR = np.array([255, 48, 48], np.float32)  # prediction says object, GT says background
FN_COLOUR = np.array([40, 140, 255], np.float32)  # GT object the prediction missed
NOT_METRICS = {"name", "height", "width", "resized"}
LOWER_IS_BETTER = ("mae", "hce")  # metrics whose name starts with these: smaller is better

ImageSource = Callable[[str], tuple[Path | None, bool]]  # name -> (image file, hflip)


IMAGE_FOLDER_NAMES = ("im", "ims", "img", "imgs", "image", "images")


def image_lookup(image_dir: str | Path | None, gt_dir: str | Path) -> ImageSource | None:
    """Folder mode: the input images by stem, from ``image_dir`` or, when not given, a sibling
    of the GT folder named like im/ images/ (DIS5K, DUTS-style layouts); None when none."""
    from salseg.evaluation.errors import EvaluationError
    from salseg.evaluation.io import list_maps

    folder = Path(image_dir) if image_dir else None
    if folder is None:
        gt = Path(gt_dir).resolve()
        folder = next((gt.parent / n for n in IMAGE_FOLDER_NAMES if (gt.parent / n).is_dir()),
                      None)
        if folder is None:
            return None
    elif not folder.is_dir():
        raise EvaluationError(f"image_dir {folder}: not a folder")
    found = list_maps(folder)
    return lambda name: (found.get(name), False)


def lower_is_better(metric: str) -> bool:
    return metric.startswith(LOWER_IS_BETTER)


def _fit(size: tuple[int, int], box: int) -> tuple[int, int]:
    """(width, height) of an ``(h, w)`` image scaled to fit ``box`` x ``box``."""
    h, w = size
    scale = min(box / h, box / w, 1.0) if max(h, w) > box else 1.0
    return max(1, round(w * scale)), max(1, round(h * scale))


def _resize(array: np.ndarray, wh: tuple[int, int]) -> np.ndarray:
    img = Image.fromarray(array)
    if img.size != wh:
        img = img.resize(wh, Image.BILINEAR, reducing_gap=2.0)
    return np.asarray(img)


def _as_u8(x: Any) -> np.ndarray:
    a = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * 255
    if a.dtype != np.uint8:
        f = a.astype(np.float32)
        if f.max(initial=0) <= 1.0:
            f = f * 255
        return np.clip(np.rint(f), 0, 255).astype(np.uint8)
    if a.max(initial=0) == 1:  # a 0/1 GT
        return a * np.uint8(255)
    return a


def load_thumbnail(path: Path, wh: tuple[int, int], hflip: bool = False) -> np.ndarray | None:
    """RGB thumbnail of an image file (JPEG decoded at reduced scale), or None if unreadable."""
    try:
        with Image.open(path) as img:
            img.draft("RGB", (wh[0] * 2, wh[1] * 2))
            img = ImageOps.exif_transpose(img) or img
            img = img.convert("RGB").resize(wh, Image.BILINEAR, reducing_gap=2.0)
    except Exception:  # noqa: BLE001 - the report shows a blank tile instead
        return None
    out = np.asarray(img)
    return np.ascontiguousarray(out[:, ::-1]) if hflip else out


def error_overlay(pred: np.ndarray, gt: np.ndarray, image: np.ndarray | None) -> np.ndarray:
    """uint8 RGB: the dimmed grey image (or the dimmed GT), false positives in red and false
    negatives in blue, each with the strength of the error (``pred - gt`` / ``gt - pred``)."""
    p = pred.astype(np.float32) / 255
    g = gt.astype(np.float32) / 255
    if image is not None:
        base = image.astype(np.float32).mean(axis=2, keepdims=True) * 0.45
    else:
        base = g[..., None] * 110
    out = np.repeat(base, 3, axis=2)
    fp = np.clip(p - g, 0, 1)[..., None]
    fn = np.clip(g - p, 0, 1)[..., None]
    out = out * (1 - fp) + FP_COLOUR * fp
    out = out * (1 - fn) + FN_COLOUR * fn
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _strip(tiles: list[np.ndarray]) -> np.ndarray:
    h = max(t.shape[0] for t in tiles)
    gap = np.full((h, 3, 3), 255, np.uint8)
    parts: list[np.ndarray] = []
    for t in tiles:
        if t.ndim == 2:
            t = np.repeat(t[..., None], 3, axis=2)
        if t.shape[0] < h:
            t = np.pad(t, ((0, h - t.shape[0]), (0, 0), (0, 0)), constant_values=255)
        parts += [t, gap]
    return np.concatenate(parts[:-1], axis=1)


def _jpeg(array: np.ndarray, path: Path) -> None:
    import io

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=85)
    write_bytes_atomic(buf.getvalue(), path, overwrite=True)


class Gallery:
    """Collects thumbnails while images are scored; :meth:`write` writes ``report.html``."""

    def __init__(self, out_dir: str | Path, thumb: int = THUMB, threads: int = 2) -> None:
        self.out_dir = Path(out_dir)
        self.thumb = thumb
        self.methods: list[str] = []
        self.datasets: dict[str, dict[str, dict[str, Any]]] = {}  # dataset -> name -> entry
        self._pool = ThreadPoolExecutor(max_workers=max(1, threads),
                                        thread_name_prefix="salseg-thumbs")
        self._pending: deque[Future] = deque()
        self._lock = threading.Lock()
        self._threads = max(1, threads)

    def _entry(self, dataset: str, name: str) -> tuple[dict[str, Any], bool]:
        items = self.datasets.setdefault(dataset, {})
        if name in items:
            return items[name], False
        d = list(self.datasets).index(dataset)
        entry = {"base": f"{ASSETS}/d{d}/{len(items)}.jpg", "thumbs": {}}
        items[name] = entry
        return entry, True

    def tap(self, method: str, dataset: str, items: Iterable[tuple[str, Any, Any]],
            images: ImageSource | None = None) -> Iterator[tuple[str, Any, Any]]:
        """Yield ``items`` unchanged, making the thumbnails of each on the side."""
        if method not in self.methods:
            self.methods.append(method)
        m = self.methods.index(method)
        for name, pred, gt in items:
            entry, new = self._entry(dataset, name)
            rel = entry["base"].replace(".jpg", f"_m{m}.jpg")
            entry["thumbs"][method] = rel
            source = (images(name) if images is not None else None) or (None, False)
            self._pending.append(self._pool.submit(
                self._make, _as_u8(pred), _as_u8(gt), source, entry["base"] if new else None, rel))
            while len(self._pending) > 4 * self._threads:
                self._pending.popleft().result()
            yield name, pred, gt

    def _make(self, pred: np.ndarray, gt: np.ndarray, source: tuple[Path | None, bool],
              base_rel: str | None, rel: str) -> None:
        wh = _fit(gt.shape[:2], self.thumb)
        g = _resize(gt, wh)
        p = _resize(pred, wh)
        image = load_thumbnail(source[0], wh, source[1]) if source[0] is not None else None
        folder = self.out_dir / Path(rel).parent
        folder.mkdir(parents=True, exist_ok=True)
        if base_rel is not None:
            _jpeg(_strip([image, g] if image is not None else [g]), self.out_dir / base_rel)
        _jpeg(_strip([p, error_overlay(p, g, image)]), self.out_dir / rel)

    def close(self) -> None:
        while self._pending:
            self._pending.popleft().result()
        self._pool.shutdown(wait=True)

    def write(self, results: dict, out_path: str | Path, plots: bool = True,
              overwrite: bool = False, title: str = "Evaluation report") -> Path:
        """Finish the thumbnails and write ``report.html`` for ``results`` (method -> dataset
        -> :class:`~salseg.evaluation.scoring.DatasetScores`)."""
        self.close()
        page = render_report(results, self, plots=plots, title=title)
        return write_bytes_atomic(page.encode("utf-8"), out_path, overwrite=overwrite)


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def gallery_data(results: dict, gallery: Gallery | None) -> dict[str, Any]:
    """The JSON the page sorts and pages through: per dataset, the metric names and per image
    its thumbnails and the values of every method."""
    methods = list(results)
    datasets: list[str] = []
    for per_ds in results.values():
        datasets.extend(d for d in per_ds if d not in datasets)
    out = []
    for ds in datasets:
        metrics: list[str] = []
        names: list[str] = []
        values: dict[str, dict[str, dict]] = {}
        for method in methods:
            sc = results[method].get(ds)
            for row in sc.rows if sc is not None else []:
                metrics.extend(k for k in row if k not in NOT_METRICS and k not in metrics
                               and _num(row[k]) is not None)
                if row["name"] not in values:
                    names.append(row["name"])
                    values[row["name"]] = {}
                values[row["name"]][method] = row
        thumbs = gallery.datasets.get(ds, {}) if gallery is not None else {}
        items = []
        for name in names:
            entry = thumbs.get(name, {})
            items.append({
                "n": name,
                "b": entry.get("base"),
                "t": [entry.get("thumbs", {}).get(m) for m in methods],
                "v": [[_num(values[name][m].get(k)) if m in values[name] else None
                       for k in metrics] for m in methods],
            })
        out.append({"name": ds, "metrics": metrics,
                    "lower": [k for k in metrics if lower_is_better(k)], "items": items})
    return {"methods": methods, "datasets": out}


def _table(results: dict) -> str:
    from salseg.evaluation.report import CONVENTION_TEXT, TABLE_COLUMNS
    from salseg.metrics.conventions import get_convention

    multi = len(results) > 1
    blocks = []
    by_conv: dict[str, list] = {}
    for method, per_ds in results.items():
        for ds, sc in per_ds.items():
            by_conv.setdefault(sc.summary["convention"], []).append((method, ds, sc.summary))
    for conv, entries in by_conv.items():
        columns = TABLE_COLUMNS[get_convention(conv).table]
        head = (["Method"] if multi else []) + ["Dataset", "Images"]
        head += [f"{t} {'↑' if hi else '↓'}" for t, _, hi, _ in columns]
        rows = []
        for method, ds, s in entries:
            cells = ([method] if multi else []) + [ds, str(s.get("n_images", ""))]
            for _, key, _, fmt in columns:
                v = _num(s.get(key))
                cells.append("–" if v is None else format(v, fmt))
            rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
        blocks.append(f"<p class='note'>maxF: {html.escape(CONVENTION_TEXT[conv])}.</p>"
                      "<table class='results'><tr>"
                      + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"
                      + "".join(rows) + "</table>")
    return "\n".join(blocks)


_JSON_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028",
                 "\u2029": "\\u2029"}


def script_json(value: Any) -> str:
    """JSON safe inside a ``<script>`` element: no ``<``, ``>``, ``&`` (so no ``</script>`` or
    ``<!--``) and no U+2028 / U+2029; ``JSON.parse`` reads the same value back."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return re.sub("[<>&\u2028\u2029]", lambda m: _JSON_ESCAPES[m.group(0)], text)


_SLOT = re.compile(r"%(TITLE|TABLE|CURVES|DATA)%")


def render_report(results: dict, gallery: Gallery | None, plots: bool = True,
                  title: str = "Evaluation report") -> str:
    """The text of ``report.html`` (every slot of the template filled in one pass)."""
    curves = ("<div class='curves'><img src='pr_curve.png' alt='precision-recall curves'>"
              "<img src='f_curve.png' alt='F-measure curves'></div>") if plots else ""
    values = {"TITLE": html.escape(title), "TABLE": _table(results), "CURVES": curves,
              "DATA": script_json(gallery_data(results, gallery))}
    return _SLOT.sub(lambda m: values[m.group(1)], _PAGE)


_TEMPLATE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="%CSP%">
<title>%TITLE%</title>
<style>
  body { margin: 0; padding: 16px 24px; font: 14px/1.45 system-ui, sans-serif; color: #1d232a;
         background: #f5f7f9; }
  h1 { font-size: 21px; margin: 4px 0 12px; } h2 { font-size: 17px; margin: 22px 0 8px; }
  table.results { border-collapse: collapse; background: #fff; margin: 4px 0 10px; }
  table.results td, table.results th { border: 1px solid #d6dde4; padding: 3px 10px; text-align: right; }
  table.results td:first-child, table.results th:first-child { text-align: left; }
  .note { color: #5d6b78; font-size: 13px; margin: 4px 0; }
  .curves img { max-width: 45%; max-height: 300px; background: #fff; border: 1px solid #d6dde4; margin-right: 8px; }
  .controls { display: flex; flex-wrap: wrap; gap: 10px 18px; align-items: center; margin: 8px 0 12px; }
  .legend span { display: inline-block; width: 12px; height: 12px; vertical-align: -2px; margin: 0 4px 0 10px; }
  #cards { display: flex; flex-direction: column; gap: 10px; }
  .card { background: #fff; border: 1px solid #d6dde4; border-radius: 8px; padding: 8px 12px;
          display: flex; flex-wrap: wrap; gap: 14px; align-items: flex-start; }
  .card .title { width: 100%; font-weight: 600; }
  .card .title .rank { color: #5d6b78; font-weight: 400; margin-right: 8px; }
  .card img { display: block; height: 140px; min-width: 60px; background: #eee; }
  .method { font-size: 12px; }
  .method .label { font-weight: 600; margin-bottom: 3px; }
  .vals { display: grid; grid-template-columns: repeat(4, auto); gap: 0 12px; margin-top: 3px;
          justify-content: start; }
  .vals span.key { color: #5d6b78; margin-right: 4px; }
  .vals .sorted { font-weight: 700; color: #1d232a; }
  button { font: inherit; padding: 2px 10px; }
  .legend .fp { background: rgb(255,48,48); } .legend .fn { background: rgb(40,140,255); }
</style>
</head>
<body>
<h1>%TITLE%</h1>
<h2>Results</h2>
%TABLE%
%CURVES%
<h2>Per image</h2>
<div class="controls">
  <label>Dataset <select id="dataset"></select></label>
  <label>Sort by <select id="sort"></select></label>
  <label>Order <select id="order"><option value="worst">worst first</option>
    <option value="best">best first</option><option value="name">by name</option></select></label>
  <label>Per page <select id="pagesize"><option>20</option><option selected>50</option>
    <option>100</option><option>200</option></select></label>
  <span><button id="prev">◀</button> <span id="page"></span> <button id="next">▶</button></span>
  <span class="legend">errors:<span class="fp"></span>false positive
    <span class="fn"></span>false negative</span>
</div>
<div id="cards"></div>
<script id="data" type="application/json">%DATA%</script>
<script>
"use strict";
const DATA = JSON.parse(document.getElementById("data").textContent);
const $ = (id) => document.getElementById(id);
const state = { ds: 0, page: 0, order: [] };

function fmt(v) {
  if (v === null || v === undefined) return "–";
  if (Number.isInteger(v)) return String(v);
  return Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(4);
}

function fillSort() {
  const ds = DATA.datasets[state.ds];
  const sel = $("sort");
  sel.innerHTML = "";
  DATA.methods.forEach((m, mi) => ds.metrics.forEach((k, ki) => {
    const o = document.createElement("option");
    o.value = `${mi}:${ki}`;
    o.textContent = DATA.methods.length > 1 ? `${k} (${m})` : k;
    sel.appendChild(o);
  }));
  const preferred = ["mae", "max_f", "sm"].map((k) => ds.metrics.indexOf(k)).find((i) => i >= 0);
  sel.value = `0:${preferred === undefined ? 0 : preferred}`;
}

function sortItems() {
  const ds = DATA.datasets[state.ds];
  const [mi, ki] = $("sort").value.split(":").map(Number);
  const key = ds.metrics[ki];
  const order = $("order").value;
  const idx = ds.items.map((_, i) => i);
  if (order === "name") {
    idx.sort((a, b) => ds.items[a].n < ds.items[b].n ? -1 : ds.items[a].n > ds.items[b].n ? 1 : a - b);
  } else {
    // worst first: largest first for lower-is-better metrics, smallest first otherwise
    let sign = ds.lower.includes(key) ? -1 : 1;
    if (order === "best") sign = -sign;
    const val = (i) => ds.items[i].v[mi] ? ds.items[i].v[mi][ki] : null;
    idx.sort((a, b) => {
      const va = val(a), vb = val(b);
      if (va === null && vb === null) return a - b;
      if (va === null) return 1;
      if (vb === null) return -1;
      return va !== vb ? sign * (va - vb) : a - b;
    });
  }
  state.order = idx;
  state.page = 0;
}

function img(src, alt) {
  const e = document.createElement("img");
  e.loading = "lazy"; e.decoding = "async"; e.alt = alt;
  if (src) e.src = src;
  return e;
}

function render() {
  const ds = DATA.datasets[state.ds];
  const size = Number($("pagesize").value);
  const pages = Math.max(1, Math.ceil(state.order.length / size));
  state.page = Math.min(Math.max(0, state.page), pages - 1);
  $("page").textContent = `page ${state.page + 1} / ${pages} (${state.order.length} images)`;
  const [smi, ski] = $("sort").value.split(":").map(Number);
  const box = $("cards");
  box.innerHTML = "";
  const start = state.page * size;
  state.order.slice(start, start + size).forEach((i, r) => {
    const it = ds.items[i];
    const card = document.createElement("div");
    card.className = "card";
    card.dataset.name = it.n;
    const t = document.createElement("div");
    t.className = "title";
    const rank = document.createElement("span");
    rank.className = "rank"; rank.textContent = `#${start + r + 1}`;
    t.append(rank, it.n);
    card.append(t, img(it.b, `${it.n}: image and ground truth`));
    DATA.methods.forEach((m, mi) => {
      const block = document.createElement("div");
      block.className = "method";
      const label = document.createElement("div");
      label.className = "label"; label.textContent = m;
      block.append(label, img(it.t[mi], `${it.n}: ${m} prediction and errors`));
      const vals = document.createElement("div");
      vals.className = "vals";
      ds.metrics.forEach((k, ki) => {
        const cell = document.createElement("span");
        const a = document.createElement("span"); a.className = "key"; a.textContent = k;
        const b = document.createElement("span"); b.className = "value";
        b.dataset.metric = k;
        b.textContent = fmt(it.v[mi] ? it.v[mi][ki] : null);
        if (mi === smi && ki === ski) cell.className = "sorted";
        cell.append(a, b); vals.appendChild(cell);
      });
      block.appendChild(vals);
      card.appendChild(block);
    });
    box.appendChild(card);
  });
  document.body.dataset.rendered = String(Date.now());
}

DATA.datasets.forEach((d, i) => {
  const o = document.createElement("option");
  o.value = i; o.textContent = `${d.name} (${d.items.length})`;
  $("dataset").appendChild(o);
});
$("dataset").addEventListener("change", () => { state.ds = Number($("dataset").value); fillSort(); sortItems(); render(); });
$("sort").addEventListener("change", () => { sortItems(); render(); });
$("order").addEventListener("change", () => { sortItems(); render(); });
$("pagesize").addEventListener("change", () => { state.page = 0; render(); });
$("prev").addEventListener("click", () => { state.page -= 1; render(); });
$("next").addEventListener("click", () => { state.page += 1; render(); });
if (DATA.datasets.length) { fillSort(); sortItems(); render(); }
</script>
</body>
</html>
"""


def _sha256_source(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode() + "'"


def _csp(template: str) -> str:
    """The page's Content-Security-Policy: its one inline script and style by hash, images from
    its own folder (``report_files/``, the curves), nothing else (no network, no plugins)."""
    script = re.search(r"<script>(.*?)</script>", template, re.S).group(1)
    style = re.search(r"<style>(.*?)</style>", template, re.S).group(1)
    return ("default-src 'none'; script-src " + _sha256_source(script) + "; style-src "
            + _sha256_source(style) + "; img-src 'self' file: data:; base-uri 'none'; "
            "form-action 'none'")


_PAGE = _TEMPLATE.replace("%CSP%", _csp(_TEMPLATE))
