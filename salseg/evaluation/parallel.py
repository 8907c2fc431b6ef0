"""Data-parallel model mode of ``salseg-eval`` (``num_processes=N``).

The test images are split into ``N`` strided shards (:func:`salseg.predict.parallel.shard`);
each shard is predicted in its own process (``spawn``, ``cpu_count // N`` threads, rank ``r``
on ``cuda:(r % device_count)``) by the ordinary loop
(:func:`salseg.evaluation.model.predict_pairs`) and written as 8-bit PNG maps — lossless, so
they are exactly the maps a single process would score.  The parent process then scores the
maps in the usual order with the usual code, so every metric equals the one-process value
exactly.  Maps that already exist are not predicted again: an interrupted run restarted into
the same output folder (``overwrite=true``) only predicts what is missing.
"""
from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from salseg.data.sources import Pair
from salseg.predict.parallel import rank_predictor, shard


def map_name(pair: Pair) -> str:
    return pair.stem + ("__hflip" if pair.hflip else "")


def _predict_shard(rank: int, world: int, predictor_kwargs: dict[str, Any],
                   pairs: list[Pair], folder: str, batch_size: int, num_workers: int) -> int:
    from salseg.evaluation.model import predict_pairs
    from salseg.predict.io import write_png

    predictor = rank_predictor(predictor_kwargs, rank, world)
    todo = shard(pairs, rank, world)
    for pair, pred in predict_pairs(predictor, todo, batch_size, num_workers):
        write_png(pred, Path(folder) / f"{map_name(pair)}.png", overwrite=True)
    return len(todo)


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
