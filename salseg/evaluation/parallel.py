"""Data-parallel model mode of ``salseg-eval`` (``num_processes=N``).

The test images are split into ``N`` strided shards (:func:`salseg.predict.parallel.shard`);
each shard is predicted in its own process (``spawn``, ``cpu_count // N`` threads, rank ``r``
on ``cuda:(r % device_count)``) by the ordinary loop
(:func:`salseg.evaluation.model.predict_pairs`) and written as 8-bit PNG maps — lossless, so
they are exactly the maps a single process would score.  The parent process then scores the
maps in the usual order with the usual code, so every metric equals the one-process value
exactly.

The maps are tied to what made them: a manifest (``.manifest.json`` in the maps folder) records
the sha256 of the weights file, the model, the preprocessing, the precision, the device type,
the post-processing and the list of test images (paths, sizes, modification times).  Maps whose
manifest matches are not predicted again, so an interrupted run restarted into the same output
folder (``overwrite=true``) only predicts what is missing; maps without a manifest or with
another one (another checkpoint, ``input_size``, ...) are deleted first and predicted anew.
A finished run deletes its ``.maps/`` folder unless ``keep_maps=true``.

Under ``torchrun`` (:func:`salseg.predict.parallel.launched_rank`) every launched process runs
the model mode itself: it predicts the maps of its shard of each test set (strided over the
whole set, so the shards do not depend on which maps a restart finds), all ranks wait at a
barrier of a ``gloo`` process group, and rank 0 scores the maps and writes the reports.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from salseg.data.sources import Pair
from salseg.evaluation.prediction import map_name, predict_pairs
from salseg.predict.io import write_png
from salseg.predict.parallel import rank_predictor, shard

log = logging.getLogger(__name__)
MANIFEST = ".manifest.json"


def _weights_id(weights: object) -> dict[str, Any]:
    """What the weights argument is, with the sha256 of its file (zoo names: the cached file)."""
    if weights is None:
        return {"random": "torch.manual_seed(0)"}
    if not isinstance(weights, (str, Path)):
        return {"object": type(weights).__name__}
    from salseg.weights.load import resolve_checkpoint
    from salseg.zoo.cache import file_hash

    path = resolve_checkpoint(weights)
    return {"argument": str(weights), "sha256": file_hash(path) if path.is_file() else None}


def maps_fingerprint(predictor, predictor_kwargs: dict[str, Any] | None,
                     pairs: Sequence[Pair]) -> dict[str, Any]:
    """Everything a map depends on: the weights' content, the model and its pre- and
    post-processing, the precision, the device type and the test images (path, size, mtime)."""
    images = []
    for p in pairs:
        st = Path(p.image).stat()
        images.append([str(p.image), bool(p.hflip), st.st_size, st.st_mtime_ns])
    kwargs = predictor_kwargs or {}
    return {
        "format": 1,
        "weights": _weights_id(kwargs.get("weights")),
        "model": predictor.name,
        "preprocessing": repr(predictor.preprocessing),
        "refine": repr(predictor.refine_options),
        "precision": str(kwargs.get("precision", "fp32")),
        "backend": predictor.backend,
        "device": predictor.device.type,
        "images": hashlib.sha256(json.dumps(images).encode()).hexdigest(),
    }


def prepare_maps_folder(folder: Path, fingerprint: dict[str, Any]) -> None:
    """Make ``folder`` hold only maps made by ``fingerprint``: maps of a matching manifest are
    kept (a restart), any other map is deleted; the manifest is (re)written."""
    from salseg.atomic import write_text_atomic

    manifest = folder / MANIFEST
    recorded = None
    if manifest.is_file():
        try:
            recorded = json.loads(manifest.read_text())
        except ValueError:
            recorded = None
    maps = sorted(folder.glob("*.png")) if folder.is_dir() else []
    if maps and recorded != fingerprint:
        why = "no manifest" if recorded is None else "made by another model or preprocessing"
        log.warning("%s: deleting %d map(s) of an earlier run (%s)", folder, len(maps), why)
        for m in maps:
            m.unlink()
    if recorded != fingerprint:
        folder.mkdir(parents=True, exist_ok=True)
        write_text_atomic(json.dumps(fingerprint, indent=1) + "\n", manifest, overwrite=True)


def discard_maps(folder: Path) -> None:
    """Delete a scored run's ``.maps/`` folder (``keep_maps=false``)."""
    shutil.rmtree(folder, ignore_errors=True)


def write_maps(predictor, pairs: Sequence[Pair], folder: Path, batch_size: int = 4,
               num_workers: int = 0) -> int:
    """Predict the pairs whose map is not in ``folder`` yet and write them (8-bit PNG);
    return how many were predicted."""
    folder.mkdir(parents=True, exist_ok=True)
    todo = [p for p in pairs if not (folder / f"{map_name(p)}.png").exists()]
    for pair, pred in predict_pairs(predictor, todo, batch_size, num_workers):
        write_png(pred, folder / f"{map_name(pair)}.png", overwrite=True)
    return len(todo)


def _predict_shard(rank: int, world: int, predictor_kwargs: dict[str, Any],
                   pairs: list[Pair], folder: str, batch_size: int, num_workers: int) -> int:
    predictor = rank_predictor(predictor_kwargs, rank, world)
    return write_maps(predictor, shard(pairs, rank, world), Path(folder), batch_size, num_workers)


def predict_to_folder(predictor_kwargs: dict[str, Any], pairs: Sequence[Pair], folder: Path,
                      num_processes: int, batch_size: int = 4, num_workers: int = 0) -> int:
    """Write the uint8 map of every pair into ``folder`` with ``num_processes`` processes,
    skipping maps that exist; return how many were predicted."""
    folder.mkdir(parents=True, exist_ok=True)
    missing = [p for p in pairs if not (folder / f"{map_name(p)}.png").exists()]
    if not missing:
        return 0
    world = max(1, min(num_processes, len(missing)))
    with ProcessPoolExecutor(max_workers=world, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(_predict_shard, r, world, predictor_kwargs, missing, str(folder),
                               batch_size, num_workers) for r in range(world)]
        return sum(f.result() for f in futures)


def launch_group(launched) -> None:
    """Join the ``gloo`` process group of a ``torchrun`` launch (barriers only; any device)."""
    import os

    import torch.distributed as dist

    from salseg.evaluation.errors import EvaluationError

    if dist.is_initialized():
        return
    if "MASTER_ADDR" not in os.environ or "MASTER_PORT" not in os.environ:
        raise EvaluationError("salseg-eval under a launcher needs MASTER_ADDR and MASTER_PORT "
                              "(torchrun sets them; with srun, export them or use torchrun)")
    dist.init_process_group("gloo", rank=launched.rank, world_size=launched.world)


def barrier() -> None:
    """Wait for every rank of the launch's process group."""
    import torch.distributed as dist

    dist.barrier()


def leave_group() -> None:
    """Leave the launch's process group (joined by :func:`launch_group`)."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
