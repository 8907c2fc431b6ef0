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
  feature MSEs against a frozen GT encoder left in ``train()`` mode.  BiRefNet_lite:
  ``dataset.MyData`` (``cv2.imread``, ``cv2.resize`` INTER_LINEAR, PIL flip / rotate /
  ``ImageEnhance`` / label pepper, ``ToTensor`` + ImageNet ``Normalize``), ``PixLoss`` (sigmoid of
  every level resized ``align_corners=True``; ``nn.BCELoss`` x30, batch-summed IoU x0.5, SSIM
  x10) + the gradient-branch ``nn.BCELoss``, ``AdamW(1e-4 * sqrt(batch / 4), wd 1e-2)``, fp32.
* ``salseg``: a ``lightning.Trainer`` fitting ``TrainingTask`` with the card's loss: U2-Net's
  7 BCEs / IS-Net's 6 BCEs + feature sync to a GT encoder / ``birefnet_lite``'s (AdamW as
  the official)
  on ``SegDataModule`` (recipes ``u2net_paper`` / ``isnet_paper`` / ``birefnet_paper``; IS-Net reads the warm uint8
  resize cache), the same number of loader workers.  On CUDA more rows are added: precisions
  ``bf16-mixed`` / ``16-mixed``, ``channels_last``, ``data.gpu_aug``, ``torch.compile``, CUDA
  graphs (``model.compile=reduce-overhead``) and, for IS-Net, activation checkpointing; the
  salseg rows use ``trainer=gpu``'s ``benchmark=true`` (cuDNN autotuning), the official loops
  do not set it (as the official scripts).  ``--rows`` picks rows by key (``--list-rows``).

Each row runs in its own long-lived process (so its peak memory is its own), driven in turns
through a pipe (``timing.Worker``; ``Trainer.fit`` blocks in a callback between windows).  The
first row (``official``) is the reference: its process lives throughout, every other row's
process is started in turn, and after one warm-up window each the two run ``--repeats``
windows of ``--steps`` steps alternately (ref row, row ref, ...), so a change of load on a
shared machine hits both alike.  A row's ratio to the reference is the median of the paired
per-window ratios with a 95 % bootstrap interval (``timing.paired_ratio``), marked
``unstable`` when the interval is wider than ±10 % or when a process got less than
``--min-cpu-share`` of the CPU its threads asked for (the load average and CPU share of every
window are recorded).  While a row is paused, its DataLoader workers may fill their prefetch
queue; both loops have one (``prefetch_factor`` 2), so either may start a window with batches
ready.  The split of one step into data
wait / forward (+ loss) / backward / optimizer is measured by timestamps at Lightning's hooks
(the official loop: around the same calls), with ``torch.cuda.synchronize()`` at each timestamp
in an extra window on CUDA (not in the timed windows).  Peak memory: the process's peak
resident set on the CPU (``ru_maxrss``), ``torch.cuda.max_memory_allocated`` on CUDA, of the
whole run and (``steady``) of the steps after the warm-up, which on CUDA leaves out cuDNN's
autotuning workspaces.

Sizes: U2-NetP and U2-Net at the paper's 320 -> 288 crops, batch 12; IS-Net at 1024, batch 8
(``--full``).  ``--quick`` (the default of ``make bench``) shrinks sizes and batches on the
CPU so that a run takes a few minutes on 2 cores; the output says which sizes were used.
Prints ``RATIO train_vs_official_<model> x low high mark`` for the best salseg row, and
for every row the fraction of the step spent waiting for data (``data %``, from the
synchronised window).  ``--jsonl FILE`` appends every row's result as it finishes.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from timing import (  # noqa: E402
    MIN_CPU_SHARE,
    Gate,
    Ratio,
    Window,
    Worker,
    WorkerError,
    interleave,
    load_average,
    paired_ratio,
)

MODELS = ("u2netp", "u2net", "isnet", "birefnet_lite")
# which official training loop a model belongs to: U-2-Net's, DIS's (IS-Net phase 2), BiRefNet's
LOOP = {"u2netp": "u2net", "u2net": "u2net", "isnet": "dis", "birefnet_lite": "birefnet"}
BIREFNET_LR = 1e-4 * (8 / 4) ** 0.5  # official Config.lr for DIS5K at batch 8
U2_MEAN, U2_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


# ----------------------------------------------------------------------------- sizes + data


def plan(model: str, quick: bool, device: str) -> dict:
    """Input size, crop, batch, steps per window and windows for one model."""
    if LOOP[model] == "u2net":
        full = {"size": 320, "crop": 288, "batch": 12}
        small = {"size": 128, "crop": 112, "batch": 2}
    elif LOOP[model] == "birefnet":  # CPU: the smallest input (32) keeps a row at minutes
        full = {"size": 1024, "crop": None, "batch": 8}
        small = {"size": 32, "crop": None, "batch": 2}
    else:
        full = {"size": 1024, "crop": None, "batch": 8}
        small = {"size": 160, "crop": None, "batch": 2}
    p = dict(small if quick and device == "cpu" else full)
    p["steps"] = 2 if quick else 3
    if LOOP[model] == "birefnet" and device == "cpu":
        p["steps"] = 1
    p["repeats"] = 6 if quick else 8  # paired windows: fewer give no useful interval
    p["warmup"] = 1
    if device == "cuda":
        p["steps"] = 5 if quick else 10
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


class OfficialBiRefNet(torch.utils.data.Dataset):
    """BiRefNet ``dataset.MyData(is_train=True)`` with ``preproc_methods`` flip, enhance, rotate,
    pepper (``image_proc.py``), written after the official code."""

    def __init__(self, images: list[Path], masks: list[Path], size: int) -> None:
        from torchvision import transforms

        self.images, self.masks, self.size = images, masks, size
        self.to_image = transforms.Compose([transforms.ToTensor(),
                                            transforms.Normalize(U2_MEAN, U2_STD)])
        self.to_label = transforms.ToTensor()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        import cv2
        from PIL import Image, ImageEnhance

        s = self.size
        image = cv2.resize(cv2.imread(str(self.images[i])), (s, s), interpolation=cv2.INTER_LINEAR)
        image = Image.fromarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
        label = Image.fromarray(cv2.resize(cv2.imread(str(self.masks[i]), cv2.IMREAD_GRAYSCALE),
                                           (s, s), interpolation=cv2.INTER_LINEAR))
        if random.random() > 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            label = label.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if random.random() > 0.8:
            angle = np.random.randint(-15, 15)
            image = image.rotate(angle, Image.Resampling.BICUBIC)
            label = label.rotate(angle, Image.Resampling.BICUBIC)
        image = ImageEnhance.Brightness(image).enhance(random.randint(5, 15) / 10.0)
        image = ImageEnhance.Contrast(image).enhance(random.randint(5, 15) / 10.0)
        image = ImageEnhance.Color(image).enhance(random.randint(0, 20) / 10.0)
        image = ImageEnhance.Sharpness(image).enhance(random.randint(0, 30) / 10.0)
        lab = np.array(label)
        for _ in range(int(0.0015 * lab.shape[0] * lab.shape[1])):
            lab[random.randint(0, lab.shape[0] - 1), random.randint(0, lab.shape[1] - 1)] = \
                random.randint(0, 1) * 255
        return self.to_image(image), self.to_label(Image.fromarray(lab))


def _official_iou(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    loss = 0.0
    for i in range(pred.shape[0]):  # summed over the batch, as loss.py's IoULoss
        inter = torch.sum(target[i] * pred[i])
        loss = loss + (1 - inter / (torch.sum(target[i]) + torch.sum(pred[i]) - inter))
    return loss


def _official_ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    g = torch.exp(-((torch.arange(11, dtype=torch.float32) - 5) ** 2) / (2 * 1.5 ** 2))
    g = g / g.sum()
    w = (g[:, None] @ g[None, :]).expand(pred.shape[1], 1, 11, 11).to(pred)
    conv = lambda x: F.conv2d(x, w, padding=5, groups=pred.shape[1])  # noqa: E731
    mu1, mu2 = conv(pred), conv(target)
    s11, s22, s12 = conv(pred * pred) - mu1 ** 2, conv(target * target) - mu2 ** 2, \
        conv(pred * target) - mu1 * mu2
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    ssim = ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1 ** 2 + mu2 ** 2 + c1) * (s11 + s22 + c2))
    return 1 - (1 + ssim.mean()) / 2


def official_birefnet_loss(raw, gt: torch.Tensor, bce: nn.Module) -> torch.Tensor:
    """``PixLoss`` (DIS5K weights) on the 4 levels + the gradient loss of ``train.py``."""
    (gdt_preds, gdt_labels), preds = raw[0]
    gt = gt.clamp(0, 1)
    loss = 0.0
    for p in preds:
        if p.shape != gt.shape:
            p = F.interpolate(p, size=gt.shape[2:], mode="bilinear", align_corners=True)
        p = p.sigmoid()
        loss = loss + 30 * bce(p, gt) + 0.5 * _official_iou(p, gt) + 10 * _official_ssim(p, gt)
    for gp, gl in zip(gdt_preds, gdt_labels):
        gp = F.interpolate(gp, size=gl.shape[2:], mode="bilinear", align_corners=True).sigmoid()
        loss = loss + bce(gp, gl.sigmoid())
    return loss


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


def run_official(conn, cfg: dict, device: torch.device) -> dict:
    from salseg.models import create_model, to_official

    model_name, bs = cfg["model"], cfg["batch"]
    torch.manual_seed(0)
    net = create_model(model_name).to(device).train()
    bce, mse = nn.BCELoss(reduction="mean"), nn.MSELoss(reduction="mean")
    images = sorted(Path(cfg["images"]).glob("*.jpg"))
    masks = [Path(cfg["masks"]) / f"{p.stem}.png" for p in images]
    if LOOP[model_name] == "birefnet":
        ds = OfficialBiRefNet(images, masks, cfg["size"])
        workers = cfg["workers"]
    elif LOOP[model_name] == "dis":
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
    if LOOP[model_name] == "birefnet":
        optimizer = torch.optim.AdamW(net.parameters(), lr=BIREFNET_LR, weight_decay=1e-2)
    else:
        optimizer = torch.optim.Adam(net.parameters(), lr=0.001, betas=(0.9, 0.999), eps=1e-08,
                                     weight_decay=0)
    clock = Clock(device)
    peak = PeakMemory(device)
    records: list[dict] = []
    gate = make_gate(conn, cfg, device, peak, clock)
    it = iter(loader)
    running = gate.begin()
    while running:
        clock.sync = clock.cuda and gate.tag == "split"
        last = gate.window_start if not records or records[-1]["window"] != gate.window_start \
            else records[-1]["end"]
        try:
            inputs, labels = next(it)
        except StopIteration:  # a new epoch, as the official loops (new loader workers)
            it = iter(loader)
            inputs, labels = next(it)
        inputs, labels = inputs.float().to(device), labels.float().to(device)
        t_data = clock()
        optimizer.zero_grad()
        if LOOP[model_name] == "birefnet":
            loss = official_birefnet_loss(net(inputs), labels, bce)
        elif LOOP[model_name] == "dis":
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
        end = clock()
        records.append({"start": last, "data": t_data, "fwd": t_fwd, "bwd": t_bwd, "end": end,
                        "tag": gate.tag, "window": gate.window_start})
        running = gate.after_step(bs)
    return summarize_records(records, workers, peak)


# ----------------------------------------------------------------------------- salseg


def run_salseg(conn, cfg: dict, device: torch.device) -> dict:
    from salseg.data.datamodule import SegDataModule
    from salseg.models import create_model
    from salseg.tasks import TrainingTask

    model_name, bs = cfg["model"], cfg["batch"]
    L.seed_everything(0, verbose=False)
    recipe = {"dis": "isnet_paper", "u2net": "u2net_paper", "birefnet": "birefnet_paper"}
    aug = {"name": recipe[LOOP[model_name]], "size": [cfg["size"], cfg["size"]]}
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
        # the card's loss: 6 side BCEs + the feature-sync MSE to the frozen GT encoder
        task: L.LightningModule = TrainingTask(
            name="isnet", gt_encoder_ckpt=str(enc), feature_sync=True, log_images_every_n_steps=0,
            fused_loss=cfg.get("fused_loss", False), sync_dtype=cfg.get("sync_dtype", "float32"),
            **common)
        dm.setup("fit")
        warm = dm.make_dataset(dm.train_pairs, train=True)
        # fill the resize cache before timing (the official cache is built too); cache files
        # are written atomically, so loader workers can fill it in parallel
        for _ in torch.utils.data.DataLoader(warm, batch_size=None, num_workers=os.cpu_count() or 1,
                                             collate_fn=_discard):
            pass
    elif LOOP[model_name] == "birefnet":
        import functools

        task = TrainingTask(name=model_name, log_images_every_n_steps=0, optimizer=functools.partial(
            torch.optim.AdamW, lr=BIREFNET_LR, weight_decay=1e-2), **common)
    else:
        task = TrainingTask(name=model_name, log_images_every_n_steps=0, **common)  # 7 BCEs
    peak = PeakMemory(device)
    timer = StepTimer(make_gate(conn, cfg, device, peak, Clock(device)), peak, bs)
    trainer = L.Trainer(accelerator=device.type, devices=1, precision=cfg.get("precision", "32-true"),
                        benchmark=device.type == "cuda", max_steps=-1, max_epochs=-1,
                        logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, limit_val_batches=0, callbacks=[timer])
    trainer.fit(task, datamodule=dm)
    return summarize_records(timer.records, workers, peak)


def _discard(item) -> None:
    return None


def make_gate(conn, cfg: dict, device: torch.device, peak: PeakMemory, clock: Clock) -> Gate:
    """The row's side of the driver's pipe: windows end synchronised on CUDA; the peak memory
    of the steps after the warm-up window is taken apart."""
    def window_end(tag: str | None) -> None:
        if tag == "warmup":
            peak.after_warmup()

    sync = torch.cuda.synchronize if device.type == "cuda" else None
    return Gate(conn, torch.get_num_threads(), sync=sync, on_window_end=window_end)


class StepTimer(L.Callback):
    """Drives ``Trainer.fit`` in the driver's windows (blocking between them) and takes
    timestamps at the hooks around data, forward, backward and optimizer step."""

    def __init__(self, gate: Gate, peak: PeakMemory, batch: int) -> None:
        self.gate, self.peak, self.batch = gate, peak, batch
        self.clock = Clock(torch.device("cuda" if gate.sync else "cpu"))
        self.records: list[dict] = []
        self.cur: dict = {}

    def on_train_start(self, trainer, pl_module) -> None:
        if not self.gate.begin():
            trainer.should_stop = True

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.clock.sync = self.clock.cuda and self.gate.tag == "split"
        new_window = not self.records or self.records[-1]["window"] != self.gate.window_start
        self.cur = {"start": self.gate.window_start if new_window else self.records[-1]["end"],
                    "data": self.clock(), "tag": self.gate.tag, "window": self.gate.window_start}

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        self.cur["fwd"] = self.clock()

    def on_after_backward(self, trainer, pl_module) -> None:
        self.cur["bwd"] = self.clock()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.cur["end"] = self.clock()
        self.records.append(self.cur)
        if not self.gate.after_step(self.batch):
            trainer.should_stop = True


# ----------------------------------------------------------------------------- summary


def summarize_records(records: list[dict], workers: int, peak: PeakMemory) -> dict:
    """The mean split of one step (from the synchronised ``split`` window on CUDA, else from
    the timed windows) and the peak memory; the rates come from the driver's windows."""
    timed = [r for r in records if r["tag"] != "warmup"] or records
    split_steps = [r for r in timed if r["tag"] == "split"] or timed
    split = {k: 1000 * float(np.mean([r[b] - r[a] for r in split_steps]))
             for k, a, b in (("data", "start", "data"), ("forward", "data", "fwd"),
                             ("backward", "fwd", "bwd"), ("optimizer", "bwd", "end"))}
    peak_all, peak_steady = peak.result()
    return {"split_ms": split, "peak_mib": peak_all, "steady_peak_mib": peak_steady,
            "workers": workers}


def data_fraction(split_ms: dict) -> float:
    """Fraction of the (synchronised) step spent waiting for the next batch."""
    total = sum(split_ms.values())
    return split_ms["data"] / total if total > 0 else 0.0


def row_worker(conn, cfg: dict) -> None:
    """A row's process (spawned by :class:`timing.Worker`): build, train in windows, report."""
    device = torch.device(cfg["device"])
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    run = run_official if cfg["pipeline"] == "official" else run_salseg
    result = run(conn, cfg, device)
    Gate(conn, 1).finish(result)


def row_line(label: str, windows: list[Window], summary: dict | None, ratio: Ratio | None) -> str:
    rate = statistics.median(w.rate for w in windows)
    share = statistics.median(w.cpu_share for w in windows)
    vs = f"{ratio.value:7.3f} [{ratio.low:.3f}, {ratio.high:.3f}]" if ratio else f"{'-':>7} {'':16}"
    s = summary["split_ms"] if summary else dict.fromkeys(("data", "forward", "backward", "optimizer"), float("nan"))
    mem = (summary["peak_mib"], summary["steady_peak_mib"]) if summary else (float("nan"),) * 2
    return (f"{label:<28} {rate:9.3f} {vs} {share:5.2f} {s['data']:8.1f} {s['forward']:8.1f} "
            f"{s['backward']:8.1f} {s['optimizer']:8.1f} {100 * data_fraction(s):6.1f}% "
            f"{mem[0]:8.0f} {mem[1]:8.0f}" + (f"  {ratio.mark}" if ratio and ratio.unstable else ""))


def header() -> str:
    return (f"{'pipeline':<28} {'img/s':>9} {'vs ref':>7} {'[95% interval]':<16} {'cpu':>5} "
            f"{'data ms':>8} {'fwd ms':>8} {'bwd ms':>8} {'opt ms':>8} {'data %':>7} "
            f"{'peak MiB':>8} {'steady':>8}")


def compare_rows(model: str, variants: list[dict], base: dict, p: dict, timeout: float | None,
                 split_window: bool, min_cpu_share: float, jsonl: Path | None
                 ) -> dict[str, tuple[Ratio | None, list[Window], dict | None]]:
    """Every row against the first (the reference, normally ``official``): the reference's
    worker lives throughout; each other row's worker is started in turn and the two run
    ``p["repeats"]`` windows of ``p["steps"]`` steps, alternating, after their warm-up.  At most
    two row processes exist at a time (GPU memory).  Returns per row label: its paired ratio to
    the reference, its windows and its summary (split, memory)."""
    ref_row, others = variants[0], variants[1:]
    cfg = lambda row: dict(row, **base)  # noqa: E731
    results: dict[str, tuple[Ratio | None, list[Window], dict | None]] = {}
    ref = Worker(f"{model} {ref_row['label']}", row_worker, cfg(ref_row), timeout)
    ref_windows: list[Window] = []
    try:
        ref.window(p["warmup"], "warmup")
        if not others:  # a reference alone: its own windows, no ratio
            ref_windows = [ref.window(p["steps"]) for _ in range(p["repeats"])]
        for row in others:
            try:
                with Worker(f"{model} {row['label']}", row_worker, cfg(row), timeout) as worker:
                    worker.window(p["warmup"], "warmup")
                    ws = interleave({"ref": ref.window, "row": worker.window}, p["repeats"],
                                    p["steps"], warmup=0)
                    if split_window:
                        worker.window(p["steps"], "split")
                    summary = worker.stop()
            except WorkerError as exc:
                if not ref.proc.is_alive():
                    raise
                print(f"  row {model} {row['label']} failed: {exc}", flush=True)
                FAILED.append(f"{model} {row['label']}")
                continue
            ratio = paired_ratio(ws["row"], ws["ref"], min_cpu_share=min_cpu_share)
            ref_windows += ws["ref"]
            results[row["label"]] = (ratio, ws["row"], summary)
            print(f"  {row_line(row['label'], ws['row'], summary, ratio)}", flush=True)
            if jsonl:
                with open(jsonl, "a") as fh:
                    fh.write(json.dumps({"model": model, "key": row["key"], "label": row["label"],
                                         "plan": p, "torch": torch.__version__,
                                         "reference": ref_row["key"], "ratio": ratio.as_dict(),
                                         "windows": [asdict(w) for w in ws["row"]],
                                         "reference_windows": [asdict(w) for w in ws["ref"]],
                                         **summary}) + "\n")
        if split_window:
            ref.window(p["steps"], "split")
        ref_summary = ref.stop()
    except WorkerError as exc:
        print(f"  reference row {model} {ref_row['label']} failed: {exc}", flush=True)
        FAILED.append(f"{model} {ref_row['label']}")
        return results
    finally:
        ref.kill()
    if ref_windows:
        results = {ref_row["label"]: (None, ref_windows, ref_summary), **results}
    return results


FAILED: list[str] = []  # rows that failed: the benchmark's own failure (exit 1), not a ratio

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
    # IS-Net levers (issue 24): the 6 side BCEs in one call, feature-sync distances in bf16,
    # and both with torch.compile (BatchNorm + ReLU fused into the convolutions' epilogues by
    # Inductor) or with CUDA graphs
    "bf16-fusedloss": {"pipeline": "salseg", "label": "salseg bf16 fused loss",
                       "precision": "bf16-mixed", "fused_loss": True},
    "bf16-syncbf16": {"pipeline": "salseg", "label": "salseg bf16 sync bf16",
                      "precision": "bf16-mixed", "sync_dtype": "bfloat16"},
    "bf16-compile-levers": {"pipeline": "salseg", "label": "salseg bf16 compile+loss",
                            "precision": "bf16-mixed", "compile": True, "fused_loss": True,
                            "sync_dtype": "bfloat16"},
    "bf16-graphs-levers": {"pipeline": "salseg", "label": "salseg bf16 graphs+loss",
                           "precision": "bf16-mixed", "compile": "reduce-overhead",
                           "fused_loss": True, "sync_dtype": "bfloat16"},
    # the compiled levers on top of the best eager row (bf16 channels_last gpu_aug)
    "bf16-cl-gpuaug-compile": {"pipeline": "salseg", "label": "salseg bf16 cl gpu_aug compile",
                               "precision": "bf16-mixed", "channels_last": True, "gpu_aug": True,
                               "compile": True},
    "bf16-cl-gpuaug-graphs": {"pipeline": "salseg", "label": "salseg bf16 cl gpu_aug graphs",
                              "precision": "bf16-mixed", "channels_last": True, "gpu_aug": True,
                              "compile": "reduce-overhead"},
    "bf16-cl-gpuaug-compile-levers": {"pipeline": "salseg",
                                      "label": "salseg bf16 cl gpu_aug compile+loss",
                                      "precision": "bf16-mixed", "channels_last": True,
                                      "gpu_aug": True, "compile": True, "fused_loss": True,
                                      "sync_dtype": "bfloat16"},
    "cl": {"pipeline": "salseg", "label": "salseg channels_last", "channels_last": True},
    "compile": {"pipeline": "salseg", "label": "salseg compile", "compile": True},
}
GPU_ROWS = ("official", "fp32", "bf16", "16", "bf16-cl", "bf16-gpuaug", "bf16-cl-gpuaug", "bf16-compile",
            "bf16-graphs")
ISNET_GPU_ROWS = ("bf16-ckpt", "bf16-fusedloss", "bf16-syncbf16", "bf16-compile-levers",
                  "bf16-graphs-levers")


def rows_for(model: str, device: str, cpu_variants: bool = False,
             keys: list[str] | None = None) -> list[dict]:
    """The rows of one model: ``keys`` if given, else official + salseg fp32, and on CUDA the GPU
    variants (IS-Net also with activation checkpointing, the memory option of DIS#65, and the
    loss levers)."""
    if keys is None:
        keys = ["official", "fp32"]
        if device == "cuda":
            keys = list(GPU_ROWS) + (list(ISNET_GPU_ROWS) if LOOP[model] == "dis" else [])
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
    parser.add_argument("--rows", help="comma-separated row keys, the first is the reference "
                                       "of the ratios (default: official first; see --list-rows)")
    parser.add_argument("--list-rows", action="store_true", help="print the row keys and exit")
    parser.add_argument("--steps", type=int, help="steps per timed window (default by device)")
    parser.add_argument("--repeats", type=int,
                        help="paired windows per row (default by device; >= 6 for an interval)")
    parser.add_argument("--size", type=int, help="input size (tests: tiny; default by plan)")
    parser.add_argument("--batch", type=int, help="batch size (default by plan)")
    parser.add_argument("--min-cpu-share", type=float, default=MIN_CPU_SHARE,
                        help="a row whose process got less than this share of the CPU its "
                             f"threads asked for marks its ratio unstable (default {MIN_CPU_SHARE})")
    parser.add_argument("--row-timeout", type=float, default=None,
                        help="seconds a row's process may take to answer (build or one window) "
                             "before it is stopped (reported as failed)")
    parser.add_argument("--jsonl", type=Path, help="append each row's result to this file")
    args = parser.parse_args(argv)
    if args.list_rows:
        for key, row in ROWS.items():
            print(f"{key:<16} {row['label']}")
        return 0
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else (
        "cpu" if args.device == "auto" else args.device)
    workers = args.workers if args.workers is not None else (
        1 if device == "cpu" else min(8, os.cpu_count() or 1))
    print(f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs; salseg loader workers {workers}; load average "
          f"{load_average():.2f}")
    ratios: dict[str, tuple[Ratio, str]] = {}
    with tempfile.TemporaryDirectory(prefix="salseg-bench-train-") as tmp:
        for model in args.models.split(","):
            p = plan(model, args.quick, device)
            p.update({k: v for k, v in (("steps", args.steps), ("repeats", args.repeats),
                                        ("batch", args.batch)) if v is not None})
            if args.size:
                p["size"], p["crop"] = args.size, (args.size * 7 // 8 if p["crop"] else None)
            variants = rows_for(model, device, args.cpu_variants,
                                args.rows.split(",") if args.rows else None)
            # enough images that the reference does not start a new epoch within a row pair
            n = (p["warmup"] + (p["repeats"] + 2) * p["steps"]) * p["batch"]
            src = (300, 400) if LOOP[model] == "u2net" else (
                (600, 800) if p["size"] < 1024 else (1500, 2000))
            t0 = time.perf_counter()
            im, gt = make_set(Path(tmp) / f"set_{src[0]}x{src[1]}", n, src)
            size = f"{p['size']}" + (f" -> crop {p['crop']}" if p["crop"] else "")
            full_size = "320 -> crop 288, batch 12" if LOOP[model] == "u2net" else "1024, batch 8"
            note = "" if (p["size"] in (320, 1024)) else f" (reduced by --quick; full: {full_size})"
            print(f"\n{model}: {n} images {src[1]}x{src[0]}, input {size}, batch {p['batch']}"
                  f"{note}; every row against {variants[0]['label']}: {p['repeats']} paired "
                  f"windows of {p['steps']} steps after {p['warmup']} warm-up "
                  f"(data made in {time.perf_counter() - t0:.0f} s)", flush=True)
            print(f"  {header()}", flush=True)
            work = Path(tmp) / model
            work.mkdir(exist_ok=True)
            base = dict(model=model, device=device, images=str(im), masks=str(gt),
                        work=str(work), workers=workers, **p)
            results = compare_rows(model, variants, base, p, args.row_timeout,
                                   split_window=device == "cuda",
                                   min_cpu_share=args.min_cpu_share, jsonl=args.jsonl)
            print(header())
            for label, (ratio, windows, summary) in results.items():
                print(row_line(label, windows, summary, ratio))
            ours = [(r.value, label, r) for label, (r, _, _) in results.items()
                    if r is not None and label.startswith("salseg")]
            if variants[0]["key"] == "official" and ours:
                _, label, best = max(ours)
                ratios[model] = (best, label)
    print("\nimg/s: median over the row's windows; 'vs ref': median of the paired per-window "
          "ratios row / reference with its 95 % bootstrap interval; cpu: median share of the "
          "CPU the row's process asked for (torch threads) that it got")
    print("memory: peak resident set of the row's process (CPU) / "
          "torch.cuda.max_memory_allocated (CUDA); 'steady': after the warm-up steps (on CUDA "
          "without cuDNN's autotuning workspaces)")
    if device == "cpu":
        print("no CUDA device: GPU rows (precisions, channels_last, compile, gpu_aug) not measured")
    for model, (ratio, label) in ratios.items():
        print(f"({model}: best salseg row = {label}: {ratio.describe()})")
    for model, (ratio, _) in ratios.items():
        print(ratio.line(f"train_vs_official_{model}"))
    if FAILED:
        print(f"failed rows: {', '.join(FAILED)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
