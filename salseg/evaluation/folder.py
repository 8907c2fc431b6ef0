"""Folder mode of ``salseg-eval``: score saved prediction maps of one or several methods against a
folder of ground-truth masks (``pred_dir=... gt_dir=...``) and write the reports.

``pred_dir`` is a folder of maps (one method, named after the folder), a folder whose subfolders
hold maps (one method per subfolder), or a list of such folders. Maps are matched to GT masks by
file stem; ``on_error=strict`` fails on any unmatched name (listing them), ``skip`` scores the
intersection and records how many were skipped.  Maps that cannot be used (unreadable, a NaN in a
float map, a prediction transposed against its GT) follow the same policy: ``strict`` fails with
one error listing every such file, ``skip`` leaves them out, lists them in the log and in
metrics.json (``skipped_unusable``) and counts them in ``n_skipped``.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from salseg.evaluation.errors import EvaluationError
from salseg.evaluation.html import Gallery, image_lookup
from salseg.evaluation.io import IMAGE_EXTENSIONS, read_map_u8
from salseg.evaluation.pairs import match_folders
from salseg.evaluation.report import Results, check_free, write_reports
from salseg.evaluation.scoring import score_pairs
from salseg.metrics.collection import ALL_GROUPS, convention_for
from salseg.metrics.conventions import get_convention

GENERIC_GT_NAMES = {"gt", "gts", "mask", "masks", "label", "labels", "groundtruth", "ground_truth"}


def _has_maps(folder: Path) -> bool:
    return any(p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS for p in folder.iterdir())


def resolve_methods(pred_dir: str | Path | Sequence[str | Path]) -> dict[str, Path]:
    """Method name -> folder of prediction maps."""
    entries = [pred_dir] if isinstance(pred_dir, (str, Path)) else list(pred_dir)
    if not entries:
        raise EvaluationError("pred_dir is empty")
    methods: dict[str, Path] = {}

    def add(name: str, folder: Path) -> None:
        if name in methods:
            raise EvaluationError(f"two method folders are named {name!r}: {methods[name]} and {folder}")
        methods[name] = folder

    for entry in entries:
        folder = Path(entry)
        if not folder.is_dir():
            raise EvaluationError(f"pred_dir {folder}: not a folder")
        if _has_maps(folder):
            add(folder.name, folder)
            continue
        subs = [p for p in sorted(folder.iterdir()) if p.is_dir() and _has_maps(p)]
        if not subs:
            raise EvaluationError(f"pred_dir {folder}: no prediction maps in it or in its subfolders")
        for sub in subs:
            add(sub.name, sub)
    return methods


def dataset_name(gt_dir: str | Path) -> str:
    """Name of a GT folder for the reports (its parent's name for generic names like ``gt``)."""
    p = Path(gt_dir).resolve()
    return p.parent.name if p.name.lower() in GENERIC_GT_NAMES and p.parent.name else p.name


def groups_for(convention: str, groups: str | Sequence[str] = "auto") -> tuple[str, ...]:
    """``auto``: the SOD set (no HCE) for the U2-Net convention, everything for DIS; ``all``."""
    if isinstance(groups, str):
        if groups == "auto":
            return get_convention(convention).groups
        if groups == "all":
            return ALL_GROUPS
        groups = [g.strip() for g in groups.split(",") if g.strip()]
    unknown = set(groups) - set(ALL_GROUPS)
    if unknown:
        raise EvaluationError(f"unknown metrics {sorted(unknown)}; choose from {ALL_GROUPS}")
    return tuple(groups)


def read_pair(name: str, pred_path: Path, gt_path: Path) -> tuple[str, Any, Any]:
    """Read one prediction and its GT; :class:`EvaluationError` for a map that cannot be used.

    A prediction whose size is the GT's transposed (W x H against H x W) is refused rather than
    stretched: it is almost always a rotation mix-up (EXIF orientation), not a low-res map."""
    pred, gt = read_map_u8(pred_path), read_map_u8(gt_path)
    if pred.shape != gt.shape and pred.shape == gt.shape[::-1]:
        raise EvaluationError(
            f"{pred_path}: the prediction is {pred.shape[1]}x{pred.shape[0]} (WxH), the GT "
            f"{gt_path} is {gt.shape[1]}x{gt.shape[0]}: transposed, not just smaller (an EXIF "
            "orientation mix-up?); refusing to stretch it")
    return name, pred, gt


def _read_items(pairs: list[tuple[str, Path, Path]], on_error: str,
                unusable: list[str]) -> Iterator[tuple[str, Any, Any]]:
    """Read the pairs; collect the unusable ones in ``unusable`` (``skip``) or fail listing every
    one of them (``strict``, which reads the remaining pairs first to find them all)."""
    yielded = 0
    for k, (name, pred_path, gt_path) in enumerate(pairs):
        try:
            item = read_pair(name, pred_path, gt_path)
        except EvaluationError as err:
            unusable.append(str(err))
            if on_error == "strict":
                for rest in pairs[k + 1:]:
                    try:
                        read_pair(*rest)
                    except EvaluationError as more:
                        unusable.append(str(more))
                raise EvaluationError(
                    f"{len(unusable)} map(s) cannot be scored (on_error=skip leaves them out):\n"
                    + "\n".join(f"  {u}" for u in unusable)) from None
            continue
        yielded += 1
        yield item
    if not yielded:
        raise EvaluationError("no pair could be scored:\n" + "\n".join(f"  {u}" for u in unusable))


def evaluate_folders(
    pred_dir: str | Path | Sequence[str | Path],
    gt_dir: str | Path,
    out_dir: str | Path,
    dataset: str | None = None,
    convention: str = "auto",
    groups: str | Sequence[str] = "auto",
    on_error: str = "strict",
    workers: int = 0,
    skeleton_cache: str | None = None,
    hce_binarize: str = "dis",
    progress: bool = True,
    plots: bool = True,
    overwrite: bool = False,
    log=print,  # noqa: ANN001
    html: bool = True,
    image_dir: str | Path | None = None,
) -> tuple[Results, dict[str, Path]]:
    """Score every method folder against ``gt_dir`` and write the reports into ``out_dir``."""
    out_dir = Path(out_dir)
    check_free(out_dir, overwrite)
    gt_dir = Path(gt_dir)
    if not gt_dir.is_dir():
        raise EvaluationError(f"gt_dir {gt_dir}: not a folder")
    ds = dataset or dataset_name(gt_dir)
    conv = convention_for(ds, convention)
    metric_groups = groups_for(conv, groups)
    methods = resolve_methods(pred_dir)
    gallery = Gallery(out_dir) if html else None
    images = image_lookup(image_dir, gt_dir)
    results: Results = {}
    for method, folder in methods.items():
        match = match_folders(folder, gt_dir, on_error)
        if match.n_skipped:
            log(f"[{method}] on_error=skip: scoring {len(match.pairs)} pairs, skipped "
                f"{len(match.missing_prediction)} GT maps without a prediction and "
                f"{len(match.missing_gt)} predictions without a GT map")
        unusable: list[str] = []
        items = _read_items(match.pairs, on_error, unusable)
        if gallery is not None:
            items = gallery.tap(method, ds, items, images)
        scores = score_pairs(
            items, convention=conv, groups=metric_groups, hce_binarize=hce_binarize, skeleton_cache=skeleton_cache, workers=workers,
            progress=progress, desc=f"{method} / {ds}", total=len(match.pairs),
        )
        if unusable:
            log(f"[{method}] on_error=skip: skipped {len(unusable)} map(s) that cannot be scored:\n"
                + "\n".join(f"  {u}" for u in unusable))
        scores.summary["n_skipped"] = match.n_skipped + len(unusable)
        scores.summary["skipped_unusable"] = unusable
        scores.summary["skipped_missing_prediction"] = match.missing_prediction
        scores.summary["skipped_missing_gt"] = match.missing_gt
        scores.summary["pred_dir"] = str(folder)
        scores.summary["gt_dir"] = str(gt_dir)
        results[method] = {ds: scores}
    paths = write_reports(results, out_dir, plots=plots, overwrite=overwrite, gallery=gallery)
    return results, paths
