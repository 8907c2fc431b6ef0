"""Run a salseg command under ``torchrun --standalone --nproc-per-node N`` (CPU processes) for
the data-parallel tests; the launcher variables of the calling environment are removed first."""
from __future__ import annotations

import os
import subprocess
import sys


def torchrun(module: str, args: list[str], nproc: int = 2) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "RANK", "WORLD"))}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc-per-node", str(nproc), "-m", module, *args],
                          capture_output=True, text=True, env=env, timeout=300)
