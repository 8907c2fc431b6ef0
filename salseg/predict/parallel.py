"""Data-parallel prediction: ``salseg-predict --num-processes N``.

The input list is split into ``N`` shards (``items[rank::N]``, so every shard gets a similar mix
of sizes); each shard runs the ordinary batch loop (:func:`salseg.predict.batch.predict_files`)
in its own process with its own :class:`~salseg.predict.predictor.Predictor`.  Processes are
started with ``spawn`` and get ``cpu_count // N`` threads each on the CPU; on CUDA rank ``r``
uses device ``cuda:(r % device_count)``.  Every image goes through exactly the same code as in
one process, so the files written are the same; outputs that already exist are skipped as in
one process, so an interrupted run restarted with the same command finishes only what is
missing.  The per-shard summaries are added into one :class:`RunSummary`.

Past one machine: started by ``torchrun`` (``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` /
``LOCAL_WORLD_SIZE``) or ``srun`` (``SLURM_PROCID`` / ``SLURM_STEP_NUM_TASKS`` /
``SLURM_LOCALID`` / ``SLURM_STEP_TASKS_PER_NODE``), every process of ``salseg-predict`` takes the shard of its global
rank in-process (:func:`launched_rank`), on ``cuda:<local rank>`` or with ``cpu_count //
<processes on the node>`` threads; the input list must be the same on every node (a shared
file system), which the sorted input listing guarantees.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from salseg.predict.batch import RunSummary, SaveOptions
from salseg.predict.inputs import InputItem


def shard(items: list, rank: int, world: int) -> list:
    """The items of ``rank`` out of ``world`` (strided, order kept)."""
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"bad shard {rank} of {world}")
    return items[rank::world]


@dataclass(frozen=True)
class LaunchedRank:
    """This process's place in a ``torchrun`` / ``srun`` launch."""

    rank: int
    world: int
    local_rank: int
    local_world: int


def launched_rank(environ: Mapping[str, str] | None = None) -> LaunchedRank | None:
    """The rank of a process started by ``torchrun`` or ``srun`` with more than one process,
    else ``None`` (torchrun's variables win over SLURM's).  SLURM's are those of the job
    *step* that ``srun`` starts: a batch script of a many-task job runs as one process and must
    predict everything, so ``SLURM_NTASKS`` alone does not shard."""
    env = os.environ if environ is None else environ
    for rank, world, local, local_world in (
            ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"),
            ("SLURM_PROCID", "SLURM_STEP_NUM_TASKS", "SLURM_LOCALID",
             "SLURM_STEP_TASKS_PER_NODE")):
        if rank in env and int(env.get(world, "1")) > 1:
            n = int(env[world])
            per_node = env.get(local_world, str(n)).split("(")[0].split(",")[0]  # SLURM: "4(x2)"
            found = LaunchedRank(int(env[rank]), n, int(env.get(local, env[rank])), int(per_node))
            if not 0 <= found.rank < found.world:
                raise ValueError(f"{rank}={found.rank} is outside {world}={found.world}")
            return found
    return None


def launched_device(device: str, launched: LaunchedRank) -> str:
    """The device of a launched rank (``cuda:<local rank>``); on the CPU, sets the threads to
    ``cpu_count // <processes on this node>``."""
    import torch

    chosen = _device_for(device, launched.local_rank)
    if not chosen.startswith("cuda"):
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, launched.local_world)))
    return chosen


def _device_for(device: str, rank: int) -> str:
    if device in ("auto", "cuda"):
        import torch

        if torch.cuda.is_available():
            return f"cuda:{rank % torch.cuda.device_count()}"
        if device == "cuda":
            return device  # Predictor reports that CUDA is missing
        return "cpu"
    return device


def rank_predictor(predictor_kwargs: dict[str, Any], rank: int, world: int):
    """The :class:`Predictor` of one worker process: ``cpu_count // world`` threads, the rank's
    device, and (for random weights) the same seed in every process."""
    import torch

    from salseg.predict.predictor import Predictor

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    kwargs = dict(predictor_kwargs)
    kwargs["device"] = _device_for(str(kwargs.get("device", "auto")), rank)
    if kwargs.get("weights") is None:
        torch.manual_seed(0)  # random weights: the same in every process
    return Predictor(kwargs.pop("weights", None), **kwargs)


def _run_shard(rank: int, world: int, predictor_kwargs: dict[str, Any], items: list[InputItem],
               outdir: str, save: SaveOptions, loop_kwargs: dict[str, Any]) -> RunSummary:
    from salseg.predict.batch import predict_files

    predictor = rank_predictor(predictor_kwargs, rank, world)
    return predict_files(predictor, shard(items, rank, world), outdir, save, progress=False,
                         **loop_kwargs)


def predict_files_parallel(predictor_kwargs: dict[str, Any], items: list[InputItem],
                           outdir: str | Path, save: SaveOptions = SaveOptions(),
                           num_processes: int = 2, summary: RunSummary | None = None,
                           progress: bool = True, **loop_kwargs: Any) -> RunSummary:
    """Predict ``items`` with ``num_processes`` processes; ``predictor_kwargs`` are the
    :class:`Predictor` arguments (``weights`` included); ``loop_kwargs`` go to
    :func:`predict_files` (``batch_size``, ``num_workers``, ``max_pixels``)."""
    if num_processes < 1:
        raise ValueError(f"num_processes must be >= 1, got {num_processes}")
    summary = summary or RunSummary()
    world = min(num_processes, max(1, len(items)))
    ctx = get_context("spawn")
    before = _output_states(items, outdir, save)
    counts = (summary.total, summary.written, summary.skipped, summary.outputs)
    try:
        _run_pool(ctx, world, predictor_kwargs, items, outdir, save, loop_kwargs, summary,
                  progress)
    except KeyboardInterrupt:  # the shards' summaries are lost: count what is on disk
        summary.total, summary.written, summary.skipped, summary.outputs = counts
        _count_interrupted(before, items, outdir, save, summary)
        raise
    return summary


def _output_states(items: list[InputItem], outdir: str | Path, save: SaveOptions
                   ) -> dict[Path, tuple[int, int] | None]:
    """(inode, mtime) of every planned output before the run (``None``: absent)."""
    from salseg.predict.inputs import output_path

    states: dict[Path, tuple[int, int] | None] = {}
    for item in items:
        for kind in save.kinds:
            path = output_path(outdir, item.rel, kind)
            try:
                st = path.stat()
                states[path] = (st.st_ino, st.st_mtime_ns)
            except OSError:
                states[path] = None
    return states


def _count_interrupted(before: dict[Path, tuple[int, int] | None], items: list[InputItem],
                       outdir: str | Path, save: SaveOptions, summary: RunSummary) -> None:
    """An interrupted run's true summary: the outputs written (new or replaced: atomic writes
    give a new inode) and the images they belong to."""
    from salseg.predict.inputs import output_path

    summary.total += len(items)
    for item in items:
        paths = [output_path(outdir, item.rel, kind) for kind in save.kinds]
        new = 0
        for path in paths:
            try:
                st = path.stat()
            except OSError:
                continue
            if before.get(path) != (st.st_ino, st.st_mtime_ns):
                new += 1
        summary.outputs += new
        if new:
            summary.written += 1
        elif not save.overwrite and all(before.get(p) is not None for p in paths):
            summary.skipped += 1


def _run_pool(ctx, world: int, predictor_kwargs: dict[str, Any], items: list[InputItem],  # noqa: ANN001
              outdir: str | Path, save: SaveOptions, loop_kwargs: dict[str, Any],
              summary: RunSummary, progress: bool) -> None:
    with ProcessPoolExecutor(max_workers=world, mp_context=ctx) as pool:
        futures = {pool.submit(_run_shard, rank, world, predictor_kwargs, items, str(outdir),
                               save, loop_kwargs): rank for rank in range(world)}
        done = 0
        for future in as_completed(futures):
            part = future.result()  # an error in a rank (e.g. bad weights) is raised here
            done += 1
            summary.total += part.total
            summary.written += part.written
            summary.skipped += part.skipped
            summary.outputs += part.outputs
            summary.failed.extend(part.failed)
            if progress:
                print(f"[salseg] shard {futures[future]} done ({done}/{world}): "
                      f"{part.written} predicted, {part.skipped} skipped, {len(part.failed)} "
                      "failed", file=sys.stderr, flush=True)
