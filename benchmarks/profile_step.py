#!/usr/bin/env python
"""Profile one training step (forward + loss + backward + Adam) with ``torch.profiler``.

Prints the operators that take the most time, e.g.
``python benchmarks/profile_step.py --model u2netp --size 112 --batch 2``
(on CUDA add ``--device cuda``).  Used for the "where the time goes" section of
docs/performance.md.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from salseg.losses import DeepSupervisionBCE  # noqa: E402
from salseg.models import create_model, side_logits  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="u2netp")
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--rows", type=int, default=15)
    args = p.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    net = create_model(args.model).to(device).train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = DeepSupervisionBCE()
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    y = (torch.rand(args.batch, 1, args.size, args.size, device=device) > 0.5).float()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss, _ = loss_fn(side_logits(args.model, net(x)), y)
        loss.backward()
        opt.step()

    step()  # warm-up
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=args.rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
