"""``salseg-train`` / ``python train.py``: training entry point (arrives with the training issue)."""
from __future__ import annotations

import sys


def main() -> None:
    sys.stderr.write("salseg-train: training is not implemented yet (issue 5, in progress).\n")
    raise SystemExit(2)
