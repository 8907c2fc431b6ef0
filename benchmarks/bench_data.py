#!/usr/bin/env python
"""Training-pipeline throughput per worker: salseg data pipeline vs a naive official-style one.

Generates realistic-size JPEG/PNG pairs with the synthetic renderer (400x300 like DUTS,
2000x1500 like DIS5K) in a temporary folder, then measures images/s in one process (= one
DataLoader worker) for:

* ``salseg 320``: ``SegDataset`` with ``aug=u2net_paper`` (PIL decode, float bilinear resize
  without anti-aliasing, vertical flip, crop 288, own-max + ImageNet normalisation);
* ``naive 320``: the official U-2-Net loader's steps as it runs today (``skimage.io.imread``,
  ``skimage.transform.resize`` to 320 in float64 (current default anti-aliasing), ``label / max``,
  flip, ``randint`` crop, ``image / max`` and per-channel normalisation in float64);
* ``salseg 1024`` (``aug=isnet_paper``) without and with the uint8 resize cache (warm);
* ``naive 1024``: the official DIS per-image steps (``io.imread``, float32 tensor,
  ``F.interpolate`` bilinear, uint8 truncation, ``/255``, flip, normalisation).

Rates are per worker (one process, one thread).  The contenders of a ratio run in turns, in
windows of a few images, the order alternating (``timing.interleave``); a ratio is the median
of the paired per-window ratios with a 95 % bootstrap interval, marked ``unstable`` when wide
or when the process got less than half of its one thread (``timing.paired_ratio``); the CPU
time rates are printed beside.  Prints a table and ``RATIO data_vs_naive_320``,
``RATIO data_vs_naive_1024``, ``RATIO data_cached_vs_naive_1024`` lines (with interval and
mark).  ``--quick`` uses fewer images (< 60 s).
"""
from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from salseg.data.cache import ResizeCache
from salseg.data.datasets import SegDataset
from salseg.data.sources import pair_folders
from salseg.data.synthetic import make_spec, render_pair
from salseg.data.transforms import build_recipe

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import Window, interleave, load_average, local, paired_ratio  # noqa: E402


def make_set(folder: Path, n: int, size: tuple[int, int]) -> list:
    im, gt = folder / "im", folder / "gt"
    im.mkdir(parents=True)
    gt.mkdir(parents=True)
    spec = make_spec("sod", seed=11, size=(min(size[0], 640), min(size[1], 640)))
    for i in range(n):
        img, m = render_pair(spec, "train", i)
        img = cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_CUBIC)
        m = cv2.resize(m, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
        cv2.imwrite(str(im / f"b{i:04d}.jpg"), img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
        cv2.imwrite(str(gt / f"b{i:04d}.png"), m)
    return pair_folders(im, gt).pairs


def naive_u2net(pair, rng: np.random.RandomState):
    from skimage import io, transform

    image = io.imread(pair.image)
    label = io.imread(pair.mask)
    if label.ndim == 3:
        label = label[..., 0]
    label = label[..., None]
    img = transform.resize(image, (320, 320), mode="constant")
    lbl = transform.resize(label, (320, 320), mode="constant", order=0, preserve_range=True)
    if random.random() >= 0.5:
        img, lbl = img[::-1], lbl[::-1]
    top, left = rng.randint(0, 32), rng.randint(0, 32)
    img, lbl = img[top:top + 288, left:left + 288], lbl[top:top + 288, left:left + 288]
    lbl = lbl / np.max(lbl) if np.max(lbl) >= 1e-6 else lbl
    img = img / np.max(img)
    out = np.zeros(img.shape)
    for c, (m, s) in enumerate(zip((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))):
        out[..., c] = (img[..., c] - m) / s
    return torch.from_numpy(out.transpose(2, 0, 1).copy()), torch.from_numpy(lbl.transpose(2, 0, 1).copy())


def naive_isnet(pair, rng):
    from skimage import io

    im = io.imread(pair.image)
    gt = io.imread(pair.mask)
    if gt.ndim == 3:
        gt = gt[..., 0]
    t = torch.tensor(im, dtype=torch.float32).permute(2, 0, 1)[None]
    t = F.interpolate(t, (1024, 1024), mode="bilinear").type(torch.uint8)[0]
    g = torch.tensor(gt, dtype=torch.float32)[None, None]
    g = F.interpolate(g, (1024, 1024), mode="bilinear").type(torch.uint8)[0]
    x, y = t.float() / 255.0, g.float() / 255.0
    if random.random() >= 0.5:
        x, y = torch.flip(x, dims=[2]), torch.flip(y, dims=[2])
    x = (x - 0.5) / 1.0
    return x, y


def stepper(fn):
    """One image per call, cycling through the set (``fn(i)``)."""
    state = {"i": 0}

    def step() -> float:
        fn(state["i"])
        state["i"] += 1
        return 1.0

    return step


def pair(ours, naive, n: int, windows: int = 6) -> tuple[list[Window], list[Window]]:
    """Windows of ``n // windows`` images of both contenders, in turns, after one warm-up."""
    out = interleave({"ours": local(stepper(ours), 1), "naive": local(stepper(naive), 1)},
                     windows=windows, steps=max(1, n // windows), warmup=1)
    return out["ours"], out["naive"]


def rates(ws: list[Window]) -> tuple[float, float]:
    """images/s by CPU time and by wall time over all windows."""
    work = sum(w.work for w in ws)
    return work / max(sum(w.cpu for w in ws), 1e-9), work / sum(w.wall for w in ws)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # one DataLoader worker uses one thread
    cv2.setNumThreads(1)
    n320, n1024 = (36, 6) if args.quick else (200, 24)
    tmp = Path(tempfile.mkdtemp(prefix="salseg-bench-data-"))
    rows, ratios = [], {}
    try:
        t0 = time.perf_counter()
        small = make_set(tmp / "duts_like", n320, (300, 400))
        big = make_set(tmp / "dis_like", n1024, (1500, 2000))
        print(f"generated {n320} 400x300 and {n1024} 2000x1500 pairs in "
              f"{time.perf_counter() - t0:.1f}s; load average {load_average():.2f}")
        rng = np.random.RandomState(0)

        ds320 = SegDataset(small, build_recipe("u2net_paper"), train=True, seed=0)
        ours, naive = pair(lambda i: ds320[i % len(small)],
                           lambda i: naive_u2net(small[i % len(small)], rng), n320)
        ratios["data_vs_naive_320"] = paired_ratio(ours, naive)
        rows += [("salseg u2net_paper 320", rates(ours)), ("naive official-style 320", rates(naive))]

        ds1024 = SegDataset(big, build_recipe("isnet_paper"), train=True, seed=0)
        cache = ResizeCache(tmp / "cache", truncate=True)
        dsc = SegDataset(big, build_recipe("isnet_paper"), train=True, seed=0, cache=cache)
        for i in range(len(big)):  # fill the cache (the first epoch)
            dsc[i]
        ours, naive = pair(lambda i: ds1024[i % len(big)],
                           lambda i: naive_isnet(big[i % len(big)], rng), n1024)
        ratios["data_vs_naive_1024"] = paired_ratio(ours, naive)
        cached, naive2 = pair(lambda i: dsc[i % len(big)],
                              lambda i: naive_isnet(big[i % len(big)], rng), n1024)
        ratios["data_cached_vs_naive_1024"] = paired_ratio(cached, naive2)
        rows += [("salseg isnet_paper 1024", rates(ours)), ("salseg isnet_paper 1024 cached", rates(cached)),
                 ("naive official-style 1024", rates(naive + naive2))]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n{'pipeline (1 worker, 1 thread)':34s} {'img/s (CPU)':>12s} {'img/s (wall)':>13s}")
    for name, (rc, rw) in rows:
        print(f"{name:34s} {rc:12.1f} {rw:13.1f}")
    print()
    for name, ratio in ratios.items():
        print(f"({name}: {ratio.describe()})")
    for name, ratio in ratios.items():
        print(ratio.line(name))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
