"""Model mode of ``salseg-eval``: predict every test image of a data config with a checkpoint,
exactly as ``salseg-predict`` would (the model's official preprocessing, the prediction restored
to the image's original size and quantised to 8 bits like a saved PNG), then score the maps
against the original GT masks with the same code as folder mode.

Images are decoded in DataLoader workers by the shared loop (:mod:`salseg.predict.loop`); predictions can also be saved as PNG
(``save_predictions``), so that ``salseg-eval pred_dir=...`` reproduces the numbers.
``num_processes > 1`` predicts in several processes first, and under ``torchrun`` every launched
process predicts its shard and rank 0 scores (:mod:`salseg.evaluation.parallel`).
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from salseg.data.sources import Pair
from salseg.evaluation.folder import groups_for
from salseg.evaluation.html import Gallery
from salseg.evaluation.io import read_map_u8
from salseg.evaluation.parallel import (
    barrier,
    launch_group,
    leave_group,
    predict_to_folder,
    write_maps,
)
from salseg.evaluation.prediction import decode_pair, map_name, predict_pairs
from salseg.evaluation.report import Results, check_free, write_reports
from salseg.evaluation.scoring import DatasetScores, score_pairs
from salseg.metrics.conventions import DEFAULT_CONVENTION
from salseg.predict.io import write_png
from salseg.predict.parallel import LaunchedRank, launched_device, launched_rank, shard
from salseg.predict.predictor import Predictor

# decode_pair and predict_pairs live in evaluation.prediction; importable from here as before
__all__ = ["decode_pair", "evaluate_model", "map_name", "predict_pairs", "run_model_mode"]


def _read_maps(pairs: Sequence[Pair], folder: Path) -> Iterator[tuple[Pair, np.ndarray]]:
    for pair in pairs:
        yield pair, read_map_u8(folder / f"{map_name(pair)}.png")


def _items(predictor: Predictor, pairs: Sequence[Pair], batch_size: int, num_workers: int,
           save_dir: Path | None, overwrite: bool, maps_dir: Path | None = None
           ) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    preds = _read_maps(pairs, maps_dir) if maps_dir is not None else \
        predict_pairs(predictor, pairs, batch_size, num_workers)
    for pair, pred in preds:
        name = pair.stem + ("__hflip" if pair.hflip else "")
        gt = read_map_u8(pair.mask)
        if pair.hflip:
            gt = np.ascontiguousarray(gt[:, ::-1])
        if save_dir is not None and save_dir != maps_dir:
            write_png(pred, save_dir / f"{name}.png", overwrite=overwrite)
        yield name, pred, gt


def evaluate_model(predictor: Predictor, test_sets: Sequence[tuple[str, Sequence[Pair]]],
                   out_dir: str | Path, convention: str = DEFAULT_CONVENTION, method: str | None = None,
                   groups: str | Sequence[str] = "auto", batch_size: int = 4, num_workers: int = 0,
                   save_predictions: bool = False, workers: int = 0, hce_binarize: str = "dis",
                   skeleton_cache: str | None = None, progress: bool = True, plots: bool = True,
                   overwrite: bool = False, html: bool = True, num_processes: int = 1,
                   predictor_kwargs: dict | None = None, launched: LaunchedRank | None = None,
                   keep_maps: bool = False) -> tuple[Results, dict[str, Path]]:
    """Predict and score every test set; write the same reports as folder mode into ``out_dir``.

    ``num_processes > 1`` (with ``predictor_kwargs``, the :class:`Predictor` arguments) first
    writes the maps with that many processes into ``predictions/<set>`` (kept) or
    ``.maps/<set>`` (deleted once scored unless ``keep_maps``), then scores them (same values
    as one process).  The maps folder carries a manifest of what made the maps
    (:func:`salseg.evaluation.parallel.maps_fingerprint`): a restart reuses matching maps only.
    ``launched`` (a ``torchrun`` rank, in a joined process group): this process writes the maps
    of its shard of every set the same way, waits for every rank, leaves the group, and only
    rank 0 scores and writes the reports (the others return empty results).
    """
    out_dir = Path(out_dir)
    check_free(out_dir, overwrite)
    for name, pairs in test_sets:
        missing = [p.image for p in pairs if p.mask is None]
        if missing:
            raise ValueError(f"test set {name}: {len(missing)} image(s) without a GT mask, e.g. {missing[0]}")

    def maps_folder(name: str) -> Path:  # where multi-process runs put the maps
        return out_dir / "predictions" / name if save_predictions else out_dir / ".maps" / name

    def prepare_maps() -> None:  # tie the maps folders to this model (stale maps are deleted)
        from salseg.evaluation.parallel import maps_fingerprint, prepare_maps_folder

        for name, pairs in test_sets:
            prepare_maps_folder(maps_folder(name),
                                maps_fingerprint(predictor, predictor_kwargs, pairs))

    if num_processes > 1 and launched is None:
        if predictor_kwargs is None:
            raise ValueError("num_processes > 1 needs predictor_kwargs")
        prepare_maps()
    if launched is not None:  # (only then: a DDP training's test=true runs this on rank 0 alone)

        if launched.rank == 0:
            prepare_maps()
        barrier()  # every rank has checked the folder before any rank writes into it
        for name, pairs in test_sets:
            write_maps(predictor, shard(pairs, launched.rank, launched.world), maps_folder(name),
                       batch_size, num_workers)
        barrier()  # every map of every set is written
        leave_group()  # rank 0 scores alone (torchmetrics would sync over a live group)
        if launched.rank != 0:
            return {}, {}
    method = method or predictor.name
    per_dataset: dict[str, DatasetScores] = {}
    metric_groups = groups_for(convention, groups)
    gallery = Gallery(out_dir) if html else None
    for name, pairs in test_sets:
        save_dir = out_dir / "predictions" / name if save_predictions else None
        if save_dir is not None:
            save_dir.mkdir(parents=True, exist_ok=True)
        maps_dir = None
        if launched is not None:
            maps_dir = maps_folder(name)
        elif num_processes > 1:

            maps_dir = maps_folder(name)
            predict_to_folder(predictor_kwargs, pairs, maps_dir, num_processes, batch_size,
                              num_workers)
        items = _items(predictor, pairs, batch_size, num_workers, save_dir, overwrite, maps_dir)
        if gallery is not None:
            images = {p.stem + ("__hflip" if p.hflip else ""): (p.image, p.hflip) for p in pairs}
            items = gallery.tap(method, name, items, images.get)
        scores = score_pairs(items,
                             convention=convention, groups=metric_groups, hce_binarize=hce_binarize,
                             skeleton_cache=skeleton_cache, workers=workers, progress=progress,
                             desc=f"{method} / {name}", total=len(pairs))
        per_dataset[name] = scores
    results: Results = {method: per_dataset}
    paths = write_reports(results, out_dir, plots=plots, overwrite=overwrite, gallery=gallery)
    if (num_processes > 1 or launched is not None) and not save_predictions and not keep_maps:
        from salseg.evaluation.parallel import discard_maps

        discard_maps(out_dir / ".maps")  # scored: nothing a later run could mistake for its own
    return results, paths


def _size_list(size: Any) -> list[int] | None:
    """``input_size`` of the config: ``null``, an int (a square size, as salseg-predict takes)
    or ``[h, w]``."""
    from omegaconf import ListConfig

    from salseg.evaluation.errors import EvaluationError

    if size is None:
        return None
    if isinstance(size, bool):
        raise EvaluationError(f"input_size={size!r}: expected an int or [height, width]")
    if isinstance(size, int):
        return [size, size]
    if isinstance(size, (list, tuple, ListConfig)) and len(size) == 2 \
            and all(isinstance(s, int) and not isinstance(s, bool) for s in size):
        return [int(s) for s in size]
    raise EvaluationError(f"input_size={size!r}: expected an int or [height, width]")


def run_model_mode(cfg: Any, out_dir: str | Path) -> tuple[Results, dict[str, Path]]:
    """``salseg-eval`` model mode from its config (``configs/eval.yaml``): a checkpoint (or
    random weights) + the evaluation sets of ``data=...`` -> predictions -> reports in
    ``out_dir``; returns the results and the report paths."""
    from hydra.utils import instantiate
    from omegaconf import ListConfig

    from salseg.evaluation.errors import EvaluationError
    from salseg.metrics.collection import convention_for

    if cfg.get("data") is None:
        raise EvaluationError("model mode needs a data config: data=duts_te (or a multirun "
                              "-m data=duts_te,ecssd,...), see configs/data/")
    if cfg.get("pred_dir"):
        raise EvaluationError("give either ckpt=... (model mode) or pred_dir=... (folder mode)")
    model_cfg = cfg.get("model")
    model_name = str(model_cfg.name) if model_cfg is not None else None
    if not cfg.get("ckpt") and not model_name:
        raise EvaluationError("random_weights=true needs model=<name>")
    input_size = cfg.get("input_size")
    # the data first: every test set is listed and checked before any weights are resolved
    # (a zoo name may download hundreds of MB), and every missing set is named at once
    datamodule = instantiate(cfg.data, verbose=False)
    test_sets = datamodule.evaluation_sets()
    if not test_sets:
        raise EvaluationError(f"data={datamodule.name}: no test images to evaluate")
    launched = launched_rank()
    if launched is not None and int(cfg.get("num_processes", 1)) > 1:
        raise EvaluationError("num_processes starts its own processes; under torchrun each "
                              "launched process already takes its shard (leave it at 1)")
    device = str(cfg.get("device", "auto"))
    if launched is not None:

        launch_group(launched)
        device = launched_device(device, launched)
    predictor_kwargs = dict(
        weights=None if cfg.get("random_weights") else str(cfg.ckpt), model=model_name,
        device=device, precision=str(cfg.get("precision", "fp32")),
        input_size=_size_list(input_size),
        resize=str(cfg.get("resize", "official")))
    kwargs = dict(predictor_kwargs)
    if cfg.get("random_weights"):  # the same random network in every process and every run
        import torch

        torch.manual_seed(0)
    predictor = Predictor(kwargs.pop("weights"), **kwargs)
    convention = cfg.get("convention", "auto")
    if convention == "auto":
        convention = datamodule.convention
    convention = convention_for(test_sets[0][0] if test_sets else "", convention)
    metrics = cfg.get("metrics", "auto")
    if isinstance(metrics, ListConfig):
        metrics = [str(m) for m in metrics]
    try:
        return evaluate_model(
                predictor, test_sets, out_dir, convention=convention, method=cfg.get("method"),
            groups=metrics, batch_size=int(cfg.get("batch_size", 4)),
            num_workers=int(cfg.get("num_workers", 0)),
            save_predictions=bool(cfg.get("save_predictions", False)),
            workers=int(cfg.get("workers", 0)), hce_binarize=cfg.get("hce_binarize", "dis"),
            skeleton_cache=cfg.get("skeleton_cache"), progress=bool(cfg.get("progress", True)),
            plots=bool(cfg.get("plots", True)), overwrite=bool(cfg.get("overwrite", False)),
            html=bool(cfg.get("html", True)), num_processes=int(cfg.get("num_processes", 1)),
            predictor_kwargs=predictor_kwargs, launched=launched,
            keep_maps=bool(cfg.get("keep_maps", False)))
    finally:
        if launched is not None:

            leave_group()
