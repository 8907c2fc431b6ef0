"""``salseg-predict`` over files: the shared batched loop (:mod:`salseg.predict.loop`) decodes
in DataLoader workers and predicts in batches; this module post-processes and writes every
requested output atomically, and applies the CLI's policies.

Rules:

* an input that cannot be used (unreadable, truncated, empty, above the pixel limit, ...) is
  reported by name and the run goes on; :class:`RunSummary` counts it as failed;
* a run whose outputs would include one of its input files is refused (``ValueError`` naming
  them) before anything is decoded, with or without ``overwrite``;
* an image whose requested outputs all exist is skipped (not decoded) unless ``overwrite``;
  when only some exist, only the missing ones are written;
* an output path that is a dangling symbolic link is never silently left unwritten: without
  ``overwrite`` the image fails, naming the link (``overwrite`` replaces the link by the file);
* images larger than ``max_pixels`` are refused from their header alone, before decoding, so
  memory stays bounded (Pillow's decompression-bomb guard is set to the same limit).
"""
from __future__ import annotations

import os
import sys
import warnings
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from salseg.data.errors import DataError
from salseg.data.io import image_size, load_image, read_image
from salseg.predict.compose import decontaminate, render_output
from salseg.predict.inputs import (
    InputItem,
    InputProblem,
    describe_clashes,
    output_clashes,
    output_path,
)
from salseg.predict.io import OutputExistsError, write_png
from salseg.predict.loop import Prediction, predict_items
from salseg.predict.predictor import Predictor

DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's own decompression-bomb warning threshold


@dataclass(frozen=True)
class SaveOptions:
    """Which outputs to write and how."""

    kinds: tuple[str, ...] = ("mask",)
    overwrite: bool = False
    decontaminate: bool = False
    bg_color: str = "white"
    bg_image: str | Path | None = None


@dataclass
class RunSummary:
    """What a run did: images written, skipped because their outputs exist, and failures."""

    total: int = 0
    written: int = 0
    skipped: int = 0
    outputs: int = 0
    failed: list[InputProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    def report(self) -> str:
        lines = [f"{self.total} image(s): {self.written} predicted ({self.outputs} file(s) "
                 f"written), {self.skipped} skipped (outputs exist; --overwrite replaces them), "
                 f"{len(self.failed)} failed"]
        lines += [f"  FAILED {p.name}: {p.problem}" for p in self.failed]
        return "\n".join(lines)


def set_pixel_limit(max_pixels: int | None) -> None:
    """Align Pillow's decompression-bomb guard with ``max_pixels`` (``None``/0: no limit)."""
    Image.MAX_IMAGE_PIXELS = int(max_pixels) if max_pixels else None


class FileDecoder:
    """Decode one input file for :func:`salseg.predict.loop.predict_items`: refuse it from its
    header when it is above ``max_pixels``, then ``load_image`` (RGB array + gray flag)."""

    def __init__(self, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> None:
        self.max_pixels = max_pixels

    def __call__(self, item: InputItem) -> tuple[np.ndarray, bool]:
        path = item.path
        if self.max_pixels:
            with warnings.catch_warnings():  # reported by the loop, by name
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                h, w = image_size(path)
            if h * w > self.max_pixels:
                raise DataError(f"image is {w}x{h} = {h * w / 1e6:.1f} MP, above the limit of "
                                f"{self.max_pixels / 1e6:.1f} MP (raise it with --max-pixels)",
                                path)
        loaded = load_image(path)
        return loaded.array, loaded.gray


class _WorkerInit:
    """DataLoader worker set-up: one thread each, the same pixel limit as the main process."""

    def __init__(self, max_pixels: int | None) -> None:
        self.max_pixels = max_pixels

    def __call__(self, worker_id: int) -> None:
        torch.set_num_threads(1)
        set_pixel_limit(self.max_pixels)


def write_outputs(image: np.ndarray | None, alpha: np.ndarray, targets: dict[str, Path],
                  save: SaveOptions, background: np.ndarray | None = None) -> int:
    """Write the requested outputs of one image; return how many files were written."""
    fg = None
    needs_colour = any(k != "mask" for k in targets)
    if needs_colour and image is None:
        raise ValueError("the image is needed for cut-outs, composites and previews")
    if save.decontaminate and needs_colour:
        fg = decontaminate(image, alpha)
    written = 0
    for kind, path in targets.items():
        array = render_output(kind, image, alpha, fg, save.bg_color, background)
        try:
            write_png(array, path, overwrite=save.overwrite)
            written += 1
        except OutputExistsError:
            pass  # appeared meanwhile: never replaced without --overwrite
    return written


def predict_files(predictor: Predictor, items: list[InputItem], outdir: str | Path,
                  save: SaveOptions = SaveOptions(), batch_size: int = 1, num_workers: int = 0,
                  max_pixels: int | None = DEFAULT_MAX_PIXELS, progress: bool = True,
                  summary: RunSummary | None = None) -> RunSummary:
    """Predict ``items`` into ``outdir``; return the :class:`RunSummary` (never raises for a
    single bad image)."""
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    clashes = output_clashes(items, outdir, save.kinds)
    if clashes:  # an output must never be an input, with or without overwrite
        raise ValueError(describe_clashes(clashes))
    summary = summary or RunSummary()
    summary.total += len(items)
    previous_limit = Image.MAX_IMAGE_PIXELS
    set_pixel_limit(max_pixels)
    try:
        return _predict(predictor, items, outdir, save, batch_size, num_workers, max_pixels,
                        progress, summary)
    finally:
        Image.MAX_IMAGE_PIXELS = previous_limit


def _predict(predictor: Predictor, items: list[InputItem], outdir: str | Path,
             save: SaveOptions, batch_size: int, num_workers: int, max_pixels: int | None,
             progress: bool, summary: RunSummary) -> RunSummary:
    from tqdm import tqdm

    background = read_image(save.bg_image) if save.bg_image is not None else None
    work: list[tuple[InputItem, dict[str, Path]]] = []
    for item in items:
        targets = {k: output_path(outdir, item.rel, k) for k in save.kinds}
        if not save.overwrite:
            targets = {k: p for k, p in targets.items() if not p.exists()}
            dangling = [p for p in targets.values() if p.is_symlink()]
            if dangling:  # exists() is False for them, yet a file cannot be linked there
                summary.failed.append(InputProblem(str(item.path), (
                    f"output {dangling[0]} is a dangling symbolic link (to "
                    f"{os.readlink(dangling[0])}); not written: remove the link, or "
                    "--overwrite replaces it")))
                continue
        if targets:
            work.append((item, targets))
        else:
            summary.skipped += 1
    if not work:
        return summary
    keep_image = any(k != "mask" for _, t in work for k in t)
    results = predict_items(predictor, [w[0] for w in work], FileDecoder(max_pixels),
                            batch_size=batch_size, num_workers=num_workers,
                            keep_image=keep_image, worker_init_fn=_WorkerInit(max_pixels))
    bar = tqdm(total=len(work), unit="img", disable=not progress, file=sys.stderr)
    # post-processing and PNG encoding run in threads (they release the GIL), so the next
    # batch is already being inferred; at most 2 * post_workers images wait in memory
    post_workers = max(1, min(4, (os.cpu_count() or 2) // 2))
    pool = ThreadPoolExecutor(max_workers=post_workers, thread_name_prefix="salseg-post")
    pending: deque[tuple[int, Future]] = deque()

    def fail(index: int, problem: str) -> None:
        name = str(work[index][0].path)
        summary.failed.append(InputProblem(name, problem))
        bar.write(f"FAILED {name}: {problem}", file=sys.stderr)

    def finish_and_write(result: Prediction) -> int:
        alpha = result.alpha()
        return write_outputs(result.image, alpha, work[result.index][1], save, background)

    def drain(limit: int) -> None:
        while len(pending) > limit:
            index, future = pending.popleft()
            try:
                summary.outputs += future.result()
                summary.written += 1
            except Exception as exc:  # noqa: BLE001 - e.g. disk full, permission
                fail(index, f"{type(exc).__name__}: {exc}")

    try:
        for result in results:
            if result.error is not None:
                fail(result.index, result.error)
            else:
                pending.append((result.index, pool.submit(finish_and_write, result)))
            drain(2 * post_workers)
            bar.update(1)
        drain(0)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    return summary
