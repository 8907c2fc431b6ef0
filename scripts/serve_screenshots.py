"""Take the screenshots of docs/serve.md with headless Chromium: the salseg-serve page after a
background removal, and the per-image gallery of a salseg-eval report.html on the embedded
synthetic set's validation split (data=synthetic, as in `make demo`).

``--weights`` takes U2-NetP weights (e.g. the official ``u2netp.pth``); without it the tests'
U2-NetP with seeded random weights is used (``--fit-steps N`` first fits it for N steps on the
embedded synthetic set, model input 64x64: a few minutes on an idle CPU).  Needs chromium + chromium-driver
(``make browser``) and the dev extra (selenium).

    python scripts/serve_screenshots.py --out docs/images
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from browser_helpers import chromium, file_url, wait_for  # noqa: E402
from serve_helpers import ServerThread  # noqa: E402

from salseg.data.synthetic import SyntheticSpec, render_pair  # noqa: E402
from salseg.losses.deep_supervision import DeepSupervisionBCE  # noqa: E402
from salseg.models.weights import save_state_dict  # noqa: E402
from salseg.predict.predictor import Predictor  # noqa: E402
from salseg.serve.app import ServedModel, ServeSettings, create_app  # noqa: E402

SIZE = 64  # model input: small enough to fit on a busy laptop CPU in minutes


def fit_demo_model(steps: int, path: Path) -> Path:
    """The tests' U2-NetP, fitted for ``steps`` on synthetic pairs at SIZE x SIZE (Adam)."""
    predictor = Predictor(None, model="u2netp", input_size=SIZE, device="cpu")
    spec = SyntheticSpec(size=(240, 320))  # rendered like the screenshots' images, then resized
    pairs = [render_pair(spec, "train", i) for i in range(64)]
    xs = torch.stack([predictor.prepare(im) for im, _ in pairs])
    ys = torch.stack([torch.from_numpy(np.asarray(Image.fromarray(m).resize(
        (SIZE, SIZE), Image.BILINEAR)) > 127).float()[None] for _, m in pairs])
    from fixtures.predict.helpers import random_model

    net = random_model("u2netp", seed=3)  # the tests' model
    if steps == 0:
        return save_state_dict(net, path)
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    loss_fn = DeepSupervisionBCE()
    gen = torch.Generator().manual_seed(0)
    start = time.time()
    for step in range(steps):
        idx = torch.randint(0, len(xs), (8,), generator=gen)
        loss = loss_fn(net(xs[idx]), ys[idx])
        loss = loss[0] if isinstance(loss, tuple) else loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 25 == 0:
            print(f"step {step}: loss {loss.item():.3f} ({time.time() - start:.0f} s)", flush=True)
    return save_state_dict(net.eval(), path)


def page_screenshot(weights: Path, photo: Path, out: Path) -> None:
    predictor = Predictor(weights, model="u2netp", input_size=SIZE, device="cpu")
    app = create_app([ServedModel("u2netp", predictor, weights.name)], ServeSettings())
    with ServerThread(app) as url, chromium(1280, 720) as browser:
        browser.get(url + "/")
        wait_for(browser, "document.querySelectorAll('#model option').length > 0")
        browser.find_element("id", "file").send_keys(str(photo))
        wait_for(browser, "document.body.dataset.done")
        wait_for(browser, "Array.from(document.querySelectorAll('figure img'))"
                          ".every(i => i.complete && i.naturalWidth > 0)")
        browser.save_screenshot(str(out))


def report_screenshot(weights: Path, work: Path, out: Path) -> None:
    from salseg.data.sources import Pair
    from salseg.data.synthetic import ensure_synthetic, make_spec
    from salseg.evaluation.model import evaluate_model

    # the embedded synthetic set's validation split, as `make demo` and data=synthetic use it
    val = ensure_synthetic(work / "data", make_spec(), verbose=False) / "val"
    pairs = [Pair(str(im), str(val / "gt" / f"{im.stem}.png"), im.stem)
             for im in sorted((val / "im").glob("*.jpg"))]
    predictor = Predictor(weights, model="u2netp", input_size=SIZE, device="cpu")
    _, paths = evaluate_model(predictor, [("synthetic-val", pairs)], work / "eval",
                              method="u2netp", progress=False, workers=1)
    with chromium(1280, 820) as browser:
        browser.get(file_url(paths["report.html"]))
        wait_for(browser, "document.body.dataset.rendered")
        browser.execute_script("document.querySelectorAll('h2')[1].scrollIntoView()")
        wait_for(browser, "Array.from(document.querySelectorAll('.card img')).slice(0, 6)"
                          ".every(i => i.complete && i.naturalWidth > 0)")
        browser.save_screenshot(str(out))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    parser.add_argument("--weights", type=Path, help="U2-NetP weights (default: fit a demo model)")
    parser.add_argument("--fit-steps", type=int, default=0,
                        help="without --weights: fit the random model for N steps first")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.set_num_threads(1)  # tiny model: a second thread only adds OpenMP barrier waits
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        weights = args.weights or fit_demo_model(args.fit_steps, work / "u2netp_demo.pth")
        image, _ = render_pair(SyntheticSpec(size=(240, 320)), "val", 3)
        photo = work / "photo.jpg"
        Image.fromarray(image).save(photo, quality=92)
        page_screenshot(weights, photo, args.out / "serve_page.png")
        report_screenshot(weights, work, args.out / "eval_report.png")
    print(f"wrote {args.out / 'serve_page.png'} and {args.out / 'eval_report.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
