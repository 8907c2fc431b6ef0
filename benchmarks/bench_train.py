#!/usr/bin/env python
"""Training-step throughput: salseg's training vs a minimal reimplementation of the official loops.

Images per second of the **whole** training step (loading + augmentation + forward + backward +
optimizer), on the same images and the same device, for:

* ``official``: written here after the official scripts (OFFICIAL_NOTES §2-3).
  U2-Net / U2-NetP: ``skimage.io.imread``, ``RescaleT`` (``skimage.transform.resize``,
  ``mode='constant'``), ``RandomCrop`` (vertical flip, ``randint`` offsets), ``ToTensorLab(0)``
  (float64, own-max, ImageNet statistics) in a ``DataLoader(shuffle=True, num_workers=1)``;
  ``.float()``, sigmoid maps + ``nn.BCELoss`` summed over the 7 maps, ``Adam(1e-3)``, fp32,
  NCHW.  IS-Net phase 2: the official cache (uint8 tensors resized bilinear + truncated,
  ``torch.save``-d per image, built before timing), ``/255``, random h-flip, ``GOSNormalize``
  (0.5, 1.0), workers by the official rule (2 for batch > 1, 4 for > 4); loss = 6 BCEs + 6
  feature MSEs against a frozen GT encoder left in ``train()`` mode.
* ``salseg``: a ``lightning.Trainer`` fitting ``U2NetTask`` / ``ISNetTask`` (feature sync on)
  on ``SegDataModule`` (recipes ``u2net_paper`` / ``isnet_paper``; IS-Net reads the warm uint8
  resize cache), the same number of loader workers.  On CUDA more rows are added: precisions
  ``bf16-mixed`` / ``16-mixed``, ``channels_last``, ``data.gpu_aug``, ``torch.compile``, CUDA
  graphs (``model.compile=reduce-overhead``) and, for IS-Net, activation checkpointing; the
  salseg rows use ``trainer=gpu``'s ``benchmark=true`` (cuDNN autotuning), the official loops
  do not set it (as the official scripts).  ``--rows`` picks rows by key (``--list-rows``).

Each row runs in its own process (so its peak memory is its own): one warm-up step, then a few
windows of a few steps; rows run in turns for ``--rounds`` rounds (so a change of load on a
shared machine hits official and salseg alike); the rate of a row is the **median** over all
its windows and the spread ``(max - min) / median`` is printed beside it.  The split of one step into data
wait / forward (+ loss) / backward / optimizer is measured by timestamps at Lightning's hooks
(the official loop: around the same calls), with ``torch.cuda.synchronize()`` at each timestamp
in an extra window on CUDA (not in the timed windows).  Peak memory: the process's peak
resident set on the CPU (``ru_maxrss``), ``torch.cuda.max_memory_allocated`` on CUDA, of the
whole run and (``steady``) of the steps after the warm-up, which on CUDA leaves out cuDNN's
autotuning workspaces.

Sizes: U2-NetP and U2-Net at the paper's 320 -> 288 crops, batch 12; IS-Net at 1024, batch 8
(``--full``).  ``--quick`` (the default of ``make bench``) shrinks sizes and batches on the
CPU so that a run takes a few minutes on 2 cores; the output says which sizes were used.
Prints ``RATIO train_vs_official_<model> x`` = best salseg row / official row (medians), and
for every row the fraction of the step spent waiting for data (``data %``, from the
synchronised window).  ``--jsonl FILE`` appends every row's result as it finishes.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from timing import summarize  # noqa: E402

MODELS = ("u2netp", "u2net", "isnet")
# which official training loop a model belongs to: U-2-Net's or DIS's (IS-Net phase 2)
LOOP = {"u2netp": "u2net", "u2net": "u2net", "isnet": "dis"}
U2_MEAN, U2_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


# ----------------------------------------------------------------------------- sizes + data


def plan(model: str, quick: bool, device: str) -> dict:
    """Input size, crop, batch, steps per window and windows for one model."""
    if LOOP[model] == "u2net":
        full = {"size": 320, "crop": 288, "batch": 12}
        small = {"size": 128, "crop": 112, "batch": 2}
    else:
        full = {"size": 1024, "crop": None, "batch": 8}
        small = {"size": 160, "crop": None, "batch": 2}
    p = dict(small if quick and device == "cpu" else full)
    p["steps"] = 2 if quick else 3
    p["repeats"] = 2 if quick else 4
    p["warmup"] = 1
    if device == "cuda":
        p["steps"] = 10 if quick else 20
        p["warmup"] = 3  # cuDNN autotuning, compilation and CUDA-graph recording happen here
    return p


def _write_pair(job: tuple[Path, int, tuple[int, int]]) -> None:
    import cv2

    from salseg.data.synthetic import make_spec, render_pair

    folder, i, size = job
    spec = make_spec("sod", seed=5, size=(min(size[0], 480), min(size[1], 640)))
    img, m = render_pair(spec, "train", i)
    if img.shape[:2] != size:
        img = cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_CUBIC)
        m = cv2.resize(m, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
    cv2.imwrite(str(folder / "im" / f"p{i:04d}.jpg"), img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
    cv2.imwrite(str(folder / "gt" / f"p{i:04d}.png"), m)


def make_set(folder: Path, n: int, size: tuple[int, int]) -> tuple[Path, Path]:
    """``n`` synthetic JPEG/PNG pairs of ``size`` (H, W) in ``folder/im`` and ``folder/gt``
    (written by a pool of processes: not part of any timing)."""
    import multiprocessing

    im, gt = folder / "im", folder / "gt"
    if im.is_dir() and len(list(im.glob("*.jpg"))) >= n:
        return im, gt
    im.mkdir(parents=True, exist_ok=True)
    gt.mkdir(parents=True, exist_ok=True)
    with multiprocessing.get_context("spawn").Pool(os.cpu_count() or 1) as pool:
        pool.map(_write_pair, [(folder, i, size) for i in range(n)], chunksize=4)
    return im, gt


# ----------------------------------------------------------------------------- official loops


class OfficialSalObj(torch.utils.data.Dataset):
    """U-2-Net ``SalObjDataset`` + ``RescaleT`` + ``RandomCrop`` + ``ToTensorLab(flag=0)``."""

    def __init__(self, images: list[Path], masks: list[Path], size: int, crop: int) -> None:
        self.images, self.masks, self.size, self.crop = images, masks, size, crop

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        from skimage import io, transform

        image = io.imread(self.images[i])
        label = io.imread(self.masks[i])
        if label.ndim == 3:
            label = label[..., 0]
        label = label[..., None]
        image = transform.resize(image, (self.size, self.size), mode="constant")
        label = transform.resize(label, (self.size, self.size), mode="constant", order=0,
                                 preserve_range=True)
        if random.random() >= 0.5:
            image, label = image[::-1], label[::-1]
        h = w = self.size
        top = np.random.randint(0, h - self.crop)
        left = np.random.randint(0, w - self.crop)
        image = image[top:top + self.crop, left:left + self.crop]
        label = label[top:top + self.crop, left:left + self.crop]
        tmp_lbl = label / np.max(label) if np.max(label) >= 1e-6 else label
        image = image / np.max(image)
        tmp = np.zeros((image.shape[0], image.shape[1], 3))
        for c in range(3):
            tmp[:, :, c] = (image[:, :, c] - U2_MEAN[c]) / U2_STD[c]
        return (torch.from_numpy(tmp.transpose((2, 0, 1)).copy()),
                torch.from_numpy(tmp_lbl.transpose((2, 0, 1)).copy()))


class OfficialDISCache(torch.utils.data.Dataset):
    """DIS ``GOSDatasetCache`` reading the per-image cached tensors, h-flip, ``GOSNormalize``."""

    def __init__(self, files: list[tuple[Path, Path]]) -> None:
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        im = torch.load(self.files[i][0]).float() / 255.0
        gt = torch.load(self.files[i][1]).float() / 255.0
        if random.random() >= 0.5:
            im, gt = torch.flip(im, dims=[2]), torch.flip(gt, dims=[2])
        im = (im - torch.tensor([0.5, 0.5, 0.5]).view(3, 1, 1)) / torch.tensor([1.0, 1.0, 1.0]).view(3, 1, 1)
        return im, gt


def _cache_one(job: tuple[Path, Path, int, Path, Path]) -> None:
    from skimage import io

    im_path, gt_path, size, a, b = job
    torch.set_num_threads(1)
    im = torch.tensor(io.imread(im_path), dtype=torch.float32).permute(2, 0, 1)[None]
    im = F.interpolate(im, (size, size), mode="bilinear").type(torch.uint8)[0]
    gt = io.imread(gt_path)
    gt = gt[..., 0] if gt.ndim == 3 else gt
    g = torch.tensor(gt, dtype=torch.float32)[None, None]
    g = F.interpolate(g, (size, size), mode="bilinear").type(torch.uint8)[0]
    torch.save(im, a)
    torch.save(g, b)


def build_dis_cache(images: list[Path], masks: list[Path], size: int, out: Path
                    ) -> list[tuple[Path, Path]]:
    """The official cache step (``io.imread`` -> float32 -> bilinear -> ``.type(uint8)``), built
    by a pool of processes before timing."""
    import multiprocessing

    out.mkdir(parents=True, exist_ok=True)
    files, jobs = [], []
    for im_path, gt_path in zip(images, masks):
        a, b = out / f"{im_path.stem}_im.pt", out / f"{im_path.stem}_gt.pt"
        if not (a.exists() and b.exists()):
            jobs.append((im_path, gt_path, size, a, b))
        files.append((a, b))
    if jobs:
        with multiprocessing.get_context("spawn").Pool(os.cpu_count() or 1) as pool:
            pool.map(_cache_one, jobs, chunksize=2)
    return files


def official_workers(batch: int) -> int:
    """DIS ``data_loader_cache.py``: 1 for batch 1, 2 for > 1, 4 for > 4, 8 for > 8."""
    return 8 if batch > 8 else 4 if batch > 4 else 2 if batch > 1 else 1


class PeakMemory:
    """Peak memory of the whole run and of the steps after the warm-up.  On CUDA the warm-up
    holds cuDNN's autotuning (``benchmark=true``), whose trial workspaces can exceed what the
    training itself keeps; the steady peak is what a GPU must hold to train.  On the CPU both
    are the process's peak resident set (it cannot be reset)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.warmup_mib: float | None = None

    def now(self) -> float:
        if self.cuda:
            return torch.cuda.max_memory_allocated() / 2**20
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def after_warmup(self) -> None:
        self.warmup_mib = self.now()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()

    def result(self) -> tuple[float, float]:
        """``(peak of the whole run, peak after the warm-up)`` in MiB."""
        steady = self.now()
        return max(steady, self.warmup_mib or 0.0), steady


class Clock:
    """Timestamps, synchronising CUDA when asked (only in the split window)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.sync = False

    def __call__(self, force: bool = False) -> float:
        if self.cuda and (self.sync or force):
            torch.cuda.synchronize()
        return time.perf_counter()


def run_official(cfg: dict, device: torch.device) -> dict:
    from salseg.models import create_model, to_official

    model_name, bs = cfg["model"], cfg["batch"]
    torch.manual_seed(0)
    net = create_model(model_name).to(device).train()
    bce, mse = nn.BCELoss(reduction="mean"), nn.MSELoss(reduction="mean")
    images = sorted(Path(cfg["images"]).glob("*.jpg"))
    masks = [Path(cfg["masks"]) / f"{p.stem}.png" for p in images]
    if LOOP[model_name] == "dis":
        files = build_dis_cache(images, masks, cfg["size"], Path(cfg["work"]) / "official_cache")
        ds: torch.utils.data.Dataset = OfficialDISCache(files)
        workers = official_workers(bs)
        encoder = create_model("isnet_gt_encoder").to(device).train()
        for p in encoder.parameters():
            p.requires_grad = False
    else:
        ds = OfficialSalObj(images, masks, cfg["size"], cfg["crop"])
        workers = 1
    loader = torch.utils.data.DataLoader(ds, batch_size=bs, shuffle=True, num_workers=workers)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.001, betas=(0.9, 0.999), eps=1e-08,
                                 weight_decay=0)
    clock = Clock(device)
    peak = PeakMemory(device)
    records: list[dict] = []
    it = iter(loader)
    total = cfg["warmup"] + cfg["repeats"] * cfg["steps"] + (cfg["steps"] if clock.cuda else 0)
    last = clock(force=True)
    for step in range(total):
        clock.sync = clock.cuda and step >= total - cfg["steps"]
        try:
            inputs, labels = next(it)
        except StopIteration:  # a new epoch, as the official loops (new loader workers)
            it = iter(loader)
            inputs, labels = next(it)
        inputs, labels = inputs.float().to(device), labels.float().to(device)
        t_data = clock()
        optimizer.zero_grad()
        if LOOP[model_name] == "dis":
            sides, feats = to_official(model_name, net(inputs))
            _, gt_feats = to_official("isnet_gt_encoder", encoder(labels))
            loss = sum(bce(s, labels) for s in sides) + sum(mse(a, b) for a, b in zip(feats, gt_feats))
        else:
            maps = to_official(model_name, net(inputs))
            loss = sum(bce(m, labels) for m in maps)
        t_fwd = clock()
        loss.backward()
        t_bwd = clock()
        optimizer.step()
        end = clock(force=(step + 1 - cfg["warmup"]) % cfg["steps"] == 0 or step + 1 == total)
        records.append({"start": last, "data": t_data, "fwd": t_fwd, "bwd": t_bwd, "end": end,
                        "sync": clock.sync})
        last = end
        if step + 1 == cfg["warmup"]:
            peak.after_warmup()
    return summarize_records(records, cfg, device, workers, peak)


# ----------------------------------------------------------------------------- salseg


def run_salseg(cfg: dict, device: torch.device) -> dict:
    from salseg.data.datamodule import SegDataModule
    from salseg.models import create_model
    from salseg.tasks import ISNetTask, U2NetTask

    model_name, bs = cfg["model"], cfg["batch"]
    L.seed_everything(0, verbose=False)
    aug = {"name": "isnet_paper" if LOOP[model_name] == "dis" else "u2net_paper",
           "size": [cfg["size"], cfg["size"]]}
    if cfg["crop"]:
        aug["crop"] = [cfg["crop"], cfg["crop"]]
    extra = {}
    if cfg.get("gpu_aug"):
        extra["gpu_aug"] = True
    cache = {"enabled": True, "dir": str(Path(cfg["work"]) / "salseg_cache")} \
        if LOOP[model_name] == "dis" else None
    workers = cfg["workers"]
    dm = SegDataModule(name="bench", images=cfg["images"], masks=cfg["masks"], aug=aug,
                       batch_size=bs, num_workers=workers, check="none", seed=0, cache=cache,
                       verbose=False, pin_memory=device.type == "cuda",
                       persistent_workers=workers > 0, **extra)
    common = dict(channels_last=cfg.get("channels_last", False), compile=cfg.get("compile", False),
                  activation_checkpointing=cfg.get("activation_checkpointing", False))
    if LOOP[model_name] == "dis":
        enc = Path(cfg["work"]) / "gt_encoder.pth"
        if not enc.exists():
            torch.manual_seed(1)
            torch.save(create_model("isnet_gt_encoder").state_dict(), enc)
        task: L.LightningModule = ISNetTask(name="isnet", gt_encoder_ckpt=str(enc),
                                            log_images_every_n_steps=0, **common)
        dm.setup("fit")
        warm = dm.make_dataset(dm.train_pairs, train=True)
        # fill the resize cache before timing (the official cache is built too); cache files
        # are written atomically, so loader workers can fill it in parallel
        for _ in torch.utils.data.DataLoader(warm, batch_size=None, num_workers=os.cpu_count() or 1,
                                             collate_fn=_discard):
            pass
    else:
        task = U2NetTask(name=model_name, log_images_every_n_steps=0, **common)
    timer = StepTimer(cfg, device)
    total = cfg["warmup"] + cfg["repeats"] * cfg["steps"] + (cfg["steps"] if timer.clock.cuda else 0)
    trainer = L.Trainer(accelerator=device.type, devices=1, precision=cfg.get("precision", "32-true"),
                        benchmark=device.type == "cuda", max_steps=total, max_epochs=-1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, limit_val_batches=0, callbacks=[timer])
    trainer.fit(task, datamodule=dm)
    return summarize_records(timer.records, cfg, device, workers, timer.peak)


def _discard(item) -> None:
    return None


class StepTimer(L.Callback):
    """Timestamps at the hooks around data, forward, backward and optimizer step."""

    def __init__(self, cfg: dict, device: torch.device) -> None:
        self.cfg, self.clock, self.peak = cfg, Clock(device), PeakMemory(device)
        self.records: list[dict] = []
        self.cur: dict = {}
        self.last: float | None = None
        self.total = cfg["warmup"] + cfg["repeats"] * cfg["steps"] + (
            cfg["steps"] if self.clock.cuda else 0)

    def on_train_start(self, trainer, pl_module) -> None:
        self.last = self.clock(force=True)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        step = len(self.records)
        self.clock.sync = self.clock.cuda and step >= self.total - self.cfg["steps"]
        self.cur = {"start": self.last, "data": self.clock(), "sync": self.clock.sync}

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        self.cur["fwd"] = self.clock()

    def on_after_backward(self, trainer, pl_module) -> None:
        self.cur["bwd"] = self.clock()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = len(self.records)
        boundary = (step + 1 - self.cfg["warmup"]) % self.cfg["steps"] == 0
        self.cur["end"] = self.clock(force=boundary or step + 1 == self.total)
        self.records.append(self.cur)
        self.last = self.cur["end"]
        if len(self.records) == self.cfg["warmup"]:
            self.peak.after_warmup()


# ----------------------------------------------------------------------------- summary


def summarize_records(records: list[dict], cfg: dict, device: torch.device, workers: int,
                      peak: PeakMemory) -> dict:
    """Images/s per window (median, spread) and the mean split of the synchronised steps."""
    warm, steps, bs = cfg["warmup"], cfg["steps"], cfg["batch"]
    rates = []
    for w in range(cfg["repeats"]):
        window = records[warm + w * steps: warm + (w + 1) * steps]
        rates.append(len(window) * bs / (window[-1]["end"] - window[0]["start"]))
    split_steps = [r for r in records[warm:] if r["sync"]] or records[warm:]
    split = {k: 1000 * float(np.mean([r[b] - r[a] for r in split_steps]))
             for k, a, b in (("data", "start", "data"), ("forward", "data", "fwd"),
                             ("backward", "fwd", "bwd"), ("optimizer", "bwd", "end"))}
    peak_all, peak_steady = peak.result()
    stats = summarize(rates)
    return {"rates": list(stats.values), "median": stats.median, "spread": stats.spread,
            "split_ms": split, "peak_mib": peak_all, "steady_peak_mib": peak_steady,
            "workers": workers}


def data_fraction(split_ms: dict) -> float:
    """Fraction of the (synchronised) step spent waiting for the next batch."""
    total = sum(split_ms.values())
    return split_ms["data"] / total if total > 0 else 0.0


def merge_rounds(results: list[dict]) -> dict:
    """One row measured in several rounds: the windows of all rounds, split and memory averaged
    / maximised."""
    rates = [r for res in results for r in res["rates"]]
    stats = summarize(rates)
    split = {k: float(np.mean([res["split_ms"][k] for res in results]))
             for k in results[0]["split_ms"]}
    return {"rates": rates, "median": stats.median, "spread": stats.spread, "split_ms": split,
            "peak_mib": max(res["peak_mib"] for res in results),
            "steady_peak_mib": max(res["steady_peak_mib"] for res in results),
            "workers": results[0]["workers"]}


def run_row(cfg: dict) -> dict:
    device = torch.device(cfg["device"])
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    if cfg["pipeline"] == "official":
        return run_official(cfg, device)
    return run_salseg(cfg, device)


def row_line(r: dict) -> str:
    s = r["split_ms"]
    return (f"{r['median']:9.3f} {100 * r['spread']:6.0f}% {s['data']:9.1f} {s['forward']:9.1f} "
            f"{s['backward']:9.1f} {s['optimizer']:9.1f} {100 * data_fraction(s):6.1f}% "
            f"{r['peak_mib']:9.0f} {r['steady_peak_mib']:9.0f}")


def spawn_row(cfg: dict, timeout: float | None = None) -> dict | None:
    try:
        proc = subprocess.run([sys.executable, __file__, "--row", json.dumps(cfg)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        print(f"row {cfg['model']} {cfg['label']} stopped after {timeout:.0f} s:\n{out[-2000:]}",
              flush=True)
        return None
    for line in proc.stdout.splitlines():
        if line.startswith("ROWJSON "):
            return json.loads(line[len("ROWJSON "):])
    print(f"row {cfg['model']} {cfg['label']} failed (exit {proc.returncode}):\n"
          + proc.stdout[-3000:], flush=True)
    return None


# every row the benchmark knows, by key (``--rows``); labels are what the tables print
ROWS: dict[str, dict] = {
    "official": {"pipeline": "official", "label": "official fp32"},
    "fp32": {"pipeline": "salseg", "label": "salseg fp32"},
    "bf16": {"pipeline": "salseg", "label": "salseg bf16-mixed", "precision": "bf16-mixed"},
    "16": {"pipeline": "salseg", "label": "salseg 16-mixed", "precision": "16-mixed"},
    "bf16-cl": {"pipeline": "salseg", "label": "salseg bf16 channels_last",
                "precision": "bf16-mixed", "channels_last": True},
    "bf16-gpuaug": {"pipeline": "salseg", "label": "salseg bf16 gpu_aug",
                    "precision": "bf16-mixed", "gpu_aug": True},
    "bf16-cl-gpuaug": {"pipeline": "salseg", "label": "salseg bf16 cl gpu_aug",
                       "precision": "bf16-mixed", "channels_last": True, "gpu_aug": True},
    "bf16-compile": {"pipeline": "salseg", "label": "salseg bf16 compile",
                     "precision": "bf16-mixed", "compile": True},
    "bf16-graphs": {"pipeline": "salseg", "label": "salseg bf16 cuda graphs",
                    "precision": "bf16-mixed", "compile": "reduce-overhead"},
    "bf16-ckpt": {"pipeline": "salseg", "label": "salseg bf16 act. ckpt",
                  "precision": "bf16-mixed", "activation_checkpointing": True},
    "cl": {"pipeline": "salseg", "label": "salseg channels_last", "channels_last": True},
    "compile": {"pipeline": "salseg", "label": "salseg compile", "compile": True},
}
GPU_ROWS = ("official", "fp32", "bf16", "16", "bf16-cl", "bf16-gpuaug", "bf16-cl-gpuaug", "bf16-compile",
            "bf16-graphs")


def rows_for(model: str, device: str, cpu_variants: bool = False,
             keys: list[str] | None = None) -> list[dict]:
    """The rows of one model: ``keys`` if given, else official + salseg fp32, and on CUDA the GPU
    variants (IS-Net also with activation checkpointing, the memory option of DIS#65)."""
    if keys is None:
        keys = ["official", "fp32"]
        if device == "cuda":
            keys = list(GPU_ROWS) + (["bf16-ckpt"] if LOOP[model] == "dis" else [])
        elif cpu_variants:
            keys += ["cl", "compile"]
    unknown = [k for k in keys if k not in ROWS]
    if unknown:
        raise SystemExit(f"unknown rows {unknown}; known: {', '.join(ROWS)}")
    return [dict(ROWS[k], key=k) for k in keys]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes on the CPU (minutes)")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--workers", type=int, default=None,
                        help="salseg DataLoader workers (default: 1 on the CPU as the official "
                             "U-2-Net loop; min(8, CPUs) on CUDA)")
    parser.add_argument("--cpu-variants", action="store_true",
                        help="also time salseg with channels_last and torch.compile on the CPU")
    parser.add_argument("--rounds", type=int, default=2,
                        help="times every row is run, in turns with the other rows (default 2)")
    parser.add_argument("--rows", help="comma-separated row keys, in this order (see --list-rows)")
    parser.add_argument("--list-rows", action="store_true", help="print the row keys and exit")
    parser.add_argument("--steps", type=int, help="steps per timed window (default by device)")
    parser.add_argument("--repeats", type=int, help="timed windows per round (default by device)")
    parser.add_argument("--row-timeout", type=float, default=None,
                        help="seconds after which a row's process is stopped (reported as failed)")
    parser.add_argument("--jsonl", type=Path, help="append each row's result to this file")
    parser.add_argument("--row", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.row:
        print("ROWJSON " + json.dumps(run_row(json.loads(args.row))), flush=True)
        return 0
    if args.list_rows:
        for key, row in ROWS.items():
            print(f"{key:<16} {row['label']}")
        return 0
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else (
        "cpu" if args.device == "auto" else args.device)
    workers = args.workers if args.workers is not None else (
        1 if device == "cpu" else min(8, os.cpu_count() or 1))
    print(f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs; salseg loader workers {workers}")
    ratios: dict[str, tuple[float, str]] = {}
    with tempfile.TemporaryDirectory(prefix="salseg-bench-train-") as tmp:
        for model in args.models.split(","):
            p = plan(model, args.quick, device)
            p.update({k: v for k, v in (("steps", args.steps), ("repeats", args.repeats))
                      if v is not None})
            n = (p["warmup"] + (p["repeats"] + 1) * p["steps"]) * p["batch"]
            src = (300, 400) if LOOP[model] != "dis" else (
                (600, 800) if p["size"] < 1024 else (1500, 2000))
            t0 = time.perf_counter()
            im, gt = make_set(Path(tmp) / f"set_{src[0]}x{src[1]}", n, src)
            size = f"{p['size']}" + (f" -> crop {p['crop']}" if p["crop"] else "")
            full_size = "320 -> crop 288, batch 12" if LOOP[model] != "dis" else "1024, batch 8"
            note = "" if (p["size"] in (320, 1024)) else f" (reduced by --quick; full: {full_size})"
            print(f"\n{model}: {n} images {src[1]}x{src[0]}, input {size}, batch {p['batch']}"
                  f"{note}; {args.rounds} rounds x {p['repeats']} windows of {p['steps']} steps after {p['warmup']} warm-up "
                  f"(data made in {time.perf_counter() - t0:.0f} s)", flush=True)
            variants = rows_for(model, device, args.cpu_variants,
                                args.rows.split(",") if args.rows else None)
            merged: dict[str, list[dict]] = {}
            for _ in range(args.rounds):  # rows take turns, so load changes hit all of them
                for row in variants:
                    cfg = dict(row, model=model, device=device, images=str(im), masks=str(gt),
                               work=str(Path(tmp) / model), workers=workers, **p)
                    Path(cfg["work"]).mkdir(exist_ok=True)
                    res = spawn_row(cfg, args.row_timeout)
                    if res is None:
                        continue
                    merged.setdefault(row["label"], []).append(res)
                    print(f"  {model} {row['label']}: {row_line(res)}", flush=True)
                    if args.jsonl:
                        with open(args.jsonl, "a") as fh:
                            fh.write(json.dumps({"model": model, "key": row["key"],
                                                 "label": row["label"], "plan": p,
                                                 "torch": torch.__version__, **res}) + "\n")
            results = [(label, merge_rounds(rs)) for label, rs in merged.items()]
            print(f"{'pipeline':<28} {'img/s':>9} {'spread':>7} {'data ms':>9} {'fwd ms':>9} "
                  f"{'bwd ms':>9} {'opt ms':>9} {'data %':>7} {'peak MiB':>9} {'steady':>9}")
            for label, r in results:
                print(f"{label:<28} {row_line(r)}")
            got = dict(results)
            official = got.get("official fp32")
            ours = [(r["median"], label) for label, r in results if label.startswith("salseg")]
            if official and ours:
                best, label = max(ours)
                ratios[model] = (best / official["median"], label)
    print("\nmemory: peak resident set of the row's process (CPU) / "
          "torch.cuda.max_memory_allocated (CUDA); 'steady': after the warm-up steps (on CUDA "
          "without cuDNN's autotuning workspaces)")
    if device == "cpu":
        print("no CUDA device: GPU rows (precisions, channels_last, compile, gpu_aug) not measured")
    for model, (_, label) in ratios.items():
        print(f"({model}: best salseg row = {label})")
    for model, (ratio, _) in ratios.items():
        print(f"RATIO train_vs_official_{model} {ratio:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
