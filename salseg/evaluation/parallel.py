"""Data-parallel model mode of ``salseg-eval`` (``num_processes=N``).

The test images are split into ``N`` strided shards (:func:`salseg.predict.parallel.shard`);
each shard is predicted in its own process (``spawn``, ``cpu_count // N`` threads, rank ``r``
on ``cuda:(r % device_count)``) by the ordinary loop
(:func:`salseg.evaluation.model.predict_pairs`) and written as 8-bit PNG maps — lossless, so
they are exactly the maps a single process would score.  The parent process then scores the
maps in the usual order with the usual code, so every metric equals the one-process value
exactly.  Maps that already exist are not predicted again: an interrupted run restarted into
the same output folder (``overwrite=true``) only predicts what is missing.

Under ``torchrun`` (:func:`salseg.predict.parallel.launched_rank`) every launched process runs
the model mode itself: it predicts the maps of its shard of each test set (strided over the
whole set, so the shards do not depend on which maps a restart finds), all ranks wait at a
barrier of a ``gloo`` process group, and rank 0 scores the maps and writes the reports.
"""
from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from salseg.data.sources import Pair
from salseg.evaluation.prediction import map_name, predict_pairs
from salseg.predict.io import write_png
from salseg.predict.parallel import rank_predictor, shard


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
