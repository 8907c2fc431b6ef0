"""report.html built from hostile names, opened in headless Chromium (issue 19.3): names that
hold ``%DATA%``, ``<img src=x onerror=...>`` or ``</script>`` (a method folder, the GT folder's
parent, ``dataset=``, image file names) display as text, no injected script runs, and the page
still works under its Content-Security-Policy (the gallery renders, thumbnails load)."""
from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest
from browser_helpers import browser_paths, chromium, file_url, wait_for
from PIL import Image

if browser_paths() is None and os.environ.get("SALSEG_REQUIRE_BROWSER") == "1":
    raise RuntimeError("SALSEG_REQUIRE_BROWSER=1 but chromium / chromium-driver are missing")
pytestmark = pytest.mark.skipif(browser_paths() is None,
                                reason="chromium / chromium-driver not installed (make browser)")

# every payload sets a flag (and one calls alert) if it ever runs as script
METHOD = "m%DATA%<img src=x onerror=window.pwned=1>"
PARENT = "set%DATA%<img src=x onerror=alert(2)>"
IMAGE = "a<img src=x onerror=window.pwned=3>"
DATASET = "d%DATA%</script><img src=x onerror=window.pwned=4>"


def _hostile_run(tmp_path, dataset: str | None):
    gt = tmp_path / PARENT / "gt"
    images = tmp_path / PARENT / "im"
    preds = tmp_path / "preds" / METHOD
    for d in (gt, images, preds, tmp_path / "preds" / "plain"):
        d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in (IMAGE, "b%DATA%"):
        g = np.zeros((24, 32), np.uint8)
        g[6:18, 8:24] = 255
        Image.fromarray(g).save(gt / f"{name}.png")
        Image.fromarray(np.stack([g, g // 2, 255 - g], -1)).save(images / f"{name}.jpg")
        for m in (METHOD, "plain"):
            p = np.clip(g * 0.8 + rng.random(g.shape) * 60, 0, 255).astype(np.uint8)
            Image.fromarray(p).save(tmp_path / "preds" / m / f"{name}.png")
    out = tmp_path / ("out-ds" if dataset else "out")
    cmd = ["salseg-eval", f"pred_dir='{tmp_path / 'preds'}'", f"gt_dir='{gt}'",
           f"hydra.run.dir='{out}'", "progress=false", "workers=1", "plots=false"]
    if dataset:
        cmd.append(f"dataset='{dataset}'")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out / "report.html"


@pytest.fixture(scope="module")
def browser():
    with chromium() as driver:
        yield driver


@pytest.mark.slow  # two salseg-eval runs and a browser (~1 min on 2 cores)
@pytest.mark.parametrize("dataset", [None, DATASET])
def test_hostile_names_stay_text(browser, tmp_path, dataset):
    report = _hostile_run(tmp_path, dataset)
    page = report.read_text()
    assert "Content-Security-Policy" in page
    assert "<img src=x" not in page  # escaped everywhere (HTML text and JSON)
    shown_dataset = dataset or PARENT
    browser.get(file_url(report))
    wait_for(browser, "document.body.dataset.rendered")  # the page's own script runs
    # thumbnails are allowed by the policy and load from report_files/
    wait_for(browser, "Array.from(document.querySelectorAll('.card img'))"
                      ".every(i => i.complete && i.naturalWidth > 0)")
    assert browser.execute_script("return document.querySelectorAll('.card').length") == 2
    # nothing injected ran or exists as markup
    assert browser.execute_script("return window.pwned === undefined")
    assert browser.execute_script(
        "return document.querySelectorAll('img[src=\"x\"], img:not([src])').length") == 0
    from selenium.common.exceptions import NoAlertPresentException

    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018 - raises when no alert is open
    # the names display as text: in the results table, the dataset menu and the cards
    table = browser.find_element("css selector", "table.results").text
    assert METHOD in table and shown_dataset in table
    assert shown_dataset in browser.find_element("id", "dataset").text
    titles = browser.execute_script(
        "return Array.from(document.querySelectorAll('.card .title'))"
        ".map(t => t.textContent)")
    assert any(IMAGE in t for t in titles) and any("b%DATA%" in t for t in titles)
    labels = browser.execute_script(
        "return Array.from(document.querySelectorAll('.method .label'))"
        ".map(t => t.textContent)")
    assert METHOD in labels
