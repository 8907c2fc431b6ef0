"""Two processes (torch.distributed, gloo, CPU) that each score half of the images give exactly the
single-process dataset result: every state is a sum (curves as per-threshold sums)."""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from salseg.metrics import SaliencyMetrics

# "fork" avoids re-importing torch in each worker (seconds on a 2-core box); the metric code
# path is the same as under "spawn", which Lightning uses.
START_METHOD = "fork"
KEYS = ("max_f", "max_f_mean_pr", "max_f_mean_curve", "mean_f", "adp_f", "mae", "mae_bset", "wf",
        "sm", "mean_em", "max_em", "adp_em", "relax_fb", "hce", "n_images", "max_f_dis_valid")


def make_data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    gt = torch.nn.functional.avg_pool2d(torch.rand(6, 1, 40, 48, generator=gen), 9, 1, 4) > 0.5
    noise = torch.rand(6, 1, 40, 48, generator=gen)
    pred = (0.7 * gt.float() + 0.3 * noise).clamp(0, 1)
    return pred, gt


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        pred, gt = make_data()
        m = SaliencyMetrics(convention="dis")
        # uneven split: rank 0 gets 4 images, rank 1 gets 2
        idx = [0, 1, 2, 3] if rank == 0 else [4, 5]
        m.update(pred[idx], gt[idx])
        res = m.compute()
        out = {k: res[k] for k in KEYS}
        out["f_curve"] = res["curves"]["mean_curve"]["f"]
        out["pr_precision"] = res["curves"]["mean_pr"]["precision"]
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(out))
    finally:
        dist.destroy_process_group()


def test_two_process_gloo_equals_single_process(tmp_path):
    mp.start_processes(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True,
                       start_method=START_METHOD)
    pred, gt = make_data()
    single = SaliencyMetrics(convention="dis")
    single.update(pred, gt)
    ref = single.compute()
    for rank in (0, 1):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert got["n_images"] == 6
        for k in KEYS:
            assert abs(got[k] - ref[k]) <= 1e-12, (rank, k, got[k], ref[k])
        assert max(abs(a - b) for a, b in zip(got["f_curve"], ref["curves"]["mean_curve"]["f"])) < 1e-12
        assert max(
            abs(a - b) for a, b in zip(got["pr_precision"], ref["curves"]["mean_pr"]["precision"])
        ) < 1e-12


@pytest.mark.slow
def test_two_process_gloo_spawn(tmp_path):
    """The same with the "spawn" start method (fresh interpreters, as torch.multiprocessing.spawn)."""
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    pred, gt = make_data()
    single = SaliencyMetrics(convention="dis")
    single.update(pred, gt)
    ref = single.compute()
    for rank in (0, 1):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        for k in KEYS:
            assert abs(got[k] - ref[k]) <= 1e-12, (rank, k)
