"""salseg-predict --num-processes: 2 CPU processes write the same files as one; a restarted
run only predicts what is missing."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from salseg.cli.predict import main
from salseg.models import create_model
from salseg.predict.parallel import shard


def test_shard_is_a_strided_partition():
    items = list(range(7))
    parts = [shard(items, r, 3) for r in range(3)]
    assert parts == [[0, 3, 6], [1, 4], [2, 5]]
    assert sorted(sum(parts, [])) == items


def _inputs_and_one_process_run(tmp_path) -> list[str]:
    """Five odd-sized images, saved U2-NetP weights, and their masks predicted by one process
    into ``tmp_path / "one"``; returns the common salseg-predict arguments."""
    rng = np.random.default_rng(0)
    src = tmp_path / "in"
    src.mkdir()
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (40 + i, 56, 3), dtype=np.uint8)).save(src / f"im{i}.png")
    torch.manual_seed(0)
    weights = tmp_path / "u2netp.pth"
    torch.save(create_model("u2netp").state_dict(), weights)
    common = [str(src), "--weights", str(weights), "--model", "u2netp", "--device", "cpu",
              "--input-size", "64", "--quiet"]
    assert main(common + ["-o", str(tmp_path / "one")]) == 0
    return common


def _assert_same_files(one: Path, other: Path) -> list[str]:
    names = sorted(p.name for p in one.iterdir())
    assert names == sorted(p.name for p in other.iterdir()) and len(names) == 5
    for name in names:
        assert (one / name).read_bytes() == (other / name).read_bytes()
    return names


def test_two_processes_match_one_and_restart_skips_finished(tmp_path, capsys):
    common = _inputs_and_one_process_run(tmp_path)
    assert main(common + ["-o", str(tmp_path / "two"), "--num-processes", "2"]) == 0
    one = _assert_same_files(tmp_path / "one", tmp_path / "two")
    # an interrupted run: two outputs missing; the restart writes only those
    (tmp_path / "two" / one[0]).unlink()
    (tmp_path / "two" / one[3]).unlink()
    capsys.readouterr()
    assert main(common + ["-o", str(tmp_path / "two"), "--num-processes", "2"]) == 0
    report = capsys.readouterr().err
    assert "2 predicted" in report and "3 skipped" in report
    _assert_same_files(tmp_path / "one", tmp_path / "two")


def test_launched_rank_reads_torchrun_and_slurm_variables():
    import pytest

    from salseg.predict.parallel import LaunchedRank, launched_rank

    assert launched_rank({}) is None
    assert launched_rank({"RANK": "0", "WORLD_SIZE": "1"}) is None  # one process: no sharding
    torchrun = {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4"}
    assert launched_rank(torchrun) == LaunchedRank(5, 8, 1, 4)
    slurm = {"SLURM_PROCID": "3", "SLURM_STEP_NUM_TASKS": "4", "SLURM_LOCALID": "1",
             "SLURM_STEP_TASKS_PER_NODE": "2(x2)"}
    assert launched_rank(slurm) == LaunchedRank(3, 4, 1, 2)
    # the batch script of an 8-task job is one process: it must not take shard 0 of 8
    assert launched_rank({"SLURM_PROCID": "0", "SLURM_NTASKS": "8", "SLURM_LOCALID": "0"}) is None
    assert launched_rank({**slurm, **torchrun}) == LaunchedRank(5, 8, 1, 4)  # torchrun wins
    with pytest.raises(ValueError, match="RANK=4 is outside WORLD_SIZE=4"):
        launched_rank({"RANK": "4", "WORLD_SIZE": "4"})


def test_torchrun_ranks_write_the_same_files_as_one_process(tmp_path):
    """``torchrun --nproc-per-node 2 -m salseg.cli.predict``: each rank predicts its shard;
    together they write exactly the files of one process."""
    from launch_helpers import torchrun

    common = _inputs_and_one_process_run(tmp_path)
    proc = torchrun("salseg.cli.predict", [*common, "-o", str(tmp_path / "ranks")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rank 0/2: " in proc.stderr and "rank 1/2: " in proc.stderr
    _assert_same_files(tmp_path / "one", tmp_path / "ranks")
