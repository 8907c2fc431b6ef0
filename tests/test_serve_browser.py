"""Real-browser tests (headless Debian Chromium via selenium): the salseg-serve page removes a
background, and salseg-eval's report.html opens from disk and sorts by a metric.

Chromium and chromium-driver come from the system (``make browser`` / ``.ci/run`` install
them); nothing is downloaded at test time.  Without them these tests are skipped, unless
``SALSEG_REQUIRE_BROWSER=1`` (set by ``.ci/run``), which makes that an error."""
from __future__ import annotations

import csv
import io
import math
import os

import httpx
import numpy as np
import pytest
from browser_helpers import browser_paths, chromium, file_url, wait_for
from fixtures.predict.helpers import single_thread  # noqa: F401
from PIL import Image
from serve_helpers import INPUT_SIZE, ServerThread, make_image, tiny_weights

from salseg.evaluation.html import lower_is_better, render_report
from salseg.evaluation.scoring import DatasetScores
from salseg.predict.predictor import Predictor
from salseg.serve.app import ServedModel, ServeSettings, create_app

if browser_paths() is None and os.environ.get("SALSEG_REQUIRE_BROWSER") == "1":
    raise RuntimeError("SALSEG_REQUIRE_BROWSER=1 but chromium / chromium-driver are missing")
pytestmark = pytest.mark.skipif(browser_paths() is None,
                                reason="chromium / chromium-driver not installed (make browser)")


@pytest.fixture(scope="module")
def browser():
    with chromium() as driver:
        yield driver


def test_page_removes_background(browser, tmp_path):
    weights = tiny_weights(tmp_path)
    photo = make_image(tmp_path / "photo.png", size=(96, 72), seed=5)
    app = create_app([ServedModel("tiny", Predictor(weights, input_size=INPUT_SIZE, device="cpu"),
                                  "u2netp_tiny.pth")], ServeSettings())
    with ServerThread(app) as url:
        browser.get(url + "/")
        wait_for(browser, "document.querySelectorAll('#model option').length === 1")
        assert browser.execute_script("return document.getElementById('model').value") == "tiny"
        # a binary mask (threshold 0.5 of the min-max map) surely has alpha 0 and 255 pixels
        browser.execute_script("document.getElementById('threshold').value = '0.5'")
        browser.find_element("id", "file").send_keys(str(photo))
        wait_for(browser, "document.body.dataset.done")
        assert browser.find_element("id", "status").text.startswith("done")
        kinds = browser.execute_script(
            "return Array.from(document.querySelectorAll('figure[data-kind]'))"
            ".map(f => f.dataset.kind)")
        assert sorted(kinds) == ["composite", "cutout", "mask"]
        wait_for(browser, "Array.from(document.querySelectorAll('figure img'))"
                          ".every(i => i.complete && i.naturalWidth > 0)")
        cut = browser.find_element("css selector", "figure[data-kind=cutout] img")
        link = browser.find_element("css selector", "figure[data-kind=cutout] a")
        assert link.get_attribute("download") == "photo_cutout.png"
        shot = np.asarray(Image.open(io.BytesIO(cut.screenshot_as_png)).convert("RGB"))
        expected = httpx.post(url + "/api/remove", files={"file": ("photo.png",
                                                                    photo.read_bytes())},
                              data={"output": "cutout", "threshold": "0.5"}, timeout=60)
    rgba = np.asarray(Image.open(io.BytesIO(expected.content)))
    assert shot.shape == (72, 96, 3)  # the cut-out at its natural size
    assert shot.std() > 5  # not an empty screenshot
    alpha = rgba[..., 3]
    clear, opaque = alpha == 0, alpha == 255
    assert clear.sum() > 0 and opaque.sum() > 0 and (clear | opaque).all()
    shot_i = shot.astype(int)
    # fully transparent pixels show the page's grey checkerboard, not the photo
    grey = (np.abs(shot_i[..., 0] - shot_i[..., 1]) <= 2) & (np.abs(shot_i[..., 1] - shot_i[..., 2]) <= 2)
    assert grey[clear].all()
    assert (shot_i[clear].mean(axis=1) >= 140).all()  # the checker's light and dark greys
    # opaque pixels show the photo's colours
    assert np.abs(shot_i[opaque] - rgba[..., :3].astype(int)[opaque]).max() <= 2


def _synthetic_results(n: int, methods=("sharp", "blurry")) -> dict:
    rng = np.random.default_rng(0)
    results = {}
    for m in methods:
        rows = [{"name": f"img{i:05d}", "height": 10, "width": 10, "resized": False,
                 "mae": float(rng.random()), "max_f": float(rng.random()),
                 "sm": float(rng.random())} for i in range(n)]
        summary = {"convention": "u2net", "n_images": n, "max_f": 0.8, "mae": 0.1, "wf": 0.7,
                   "sm": 0.8, "relax_fb": 0.6}
        results[m] = {"SET": DatasetScores(summary=summary, curves={}, rows=rows)}
    return results


def _first_names(browser, count=3):
    return browser.execute_script(
        f"return Array.from(document.querySelectorAll('.card')).slice(0, {count})"
        ".map(c => c.dataset.name)")


def test_report_opens_from_disk_and_sorts(browser, tmp_path):
    """A real salseg-eval run (folder mode, two methods, input images) -> report.html."""
    from test_eval_folder import make_dataset

    from salseg.evaluation import evaluate_folders

    preds, gt = make_dataset(tmp_path, n=6)
    images = gt.parent / "im"
    images.mkdir()
    for p in sorted(gt.iterdir()):
        g = np.asarray(Image.open(p))
        Image.fromarray(np.stack([g, g // 2, 255 - g], -1)).save(images / f"{p.stem}.jpg")
    out = tmp_path / "out"
    _, paths = evaluate_folders(preds, gt, out, progress=False, workers=1)
    assert paths["report.html"] == out / "report.html"
    rows = list(csv.DictReader(paths["per_image.csv"].open()))
    methods = list(dict.fromkeys(r["method"] for r in rows))

    def ranking(method, metric, worst_first=True):
        values = {r["name"]: float(r[metric]) for r in rows if r["method"] == method}
        rev = lower_is_better(metric) == worst_first
        return sorted(values, key=lambda n: values[n], reverse=rev)

    browser.get(file_url(paths["report.html"]))
    wait_for(browser, "document.body.dataset.rendered")
    # worst first by default: the largest MAE of the first method on top
    assert browser.execute_script("return document.getElementById('sort').value") == "0:" + str(
        browser.execute_script("return DATA.datasets[0].metrics.indexOf('mae')"))
    assert _first_names(browser, 6) == ranking(methods[0], "mae")
    # every thumbnail (image | GT, and per method prediction | errors) loads from report_files/
    wait_for(browser, "Array.from(document.querySelectorAll('.card img'))"
                      ".every(i => i.complete && i.naturalWidth > 0)")
    assert browser.execute_script("return document.querySelectorAll('.card img').length") == \
        6 * (1 + len(methods))
    assert browser.execute_script("return document.querySelectorAll('.curves img').length") == 2
    # sort by the second method's S-measure (higher is better: lowest first)
    metrics = browser.execute_script("return DATA.datasets[0].metrics")
    option = f"1:{metrics.index('sm')}"
    browser.execute_script(
        "const s = document.getElementById('sort'); s.value = arguments[0];"
        "s.dispatchEvent(new Event('change'));", option)
    assert _first_names(browser, 6) == ranking(methods[1], "sm")
    browser.execute_script("const o = document.getElementById('order'); o.value = 'best';"
                           "o.dispatchEvent(new Event('change'));")
    assert _first_names(browser, 6) == ranking(methods[1], "sm", worst_first=False)


def test_report_with_5000_images_renders_one_page(browser, tmp_path):
    results = _synthetic_results(5000)
    page = tmp_path / "report.html"
    page.write_text(render_report(results, None, plots=False), encoding="utf-8")
    browser.get(file_url(page))
    wait_for(browser, "document.body.dataset.rendered")
    assert browser.execute_script("return document.querySelectorAll('.card').length") == 50
    assert "page 1 / 100 (5000 images)" in browser.find_element("id", "page").text
    mae = {r["name"]: r["mae"] for r in results["sharp"]["SET"].rows}
    worst = sorted(mae, key=lambda n: -mae[n])
    assert _first_names(browser, 3) == worst[:3]
    browser.find_element("id", "next").click()
    assert _first_names(browser, 1) == [worst[50]]
    assert not math.isnan(mae[worst[0]])
