"""Shared pytest set-up: make ``tests/`` importable (fixture helpers) and keep torch quiet."""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
torch.set_num_threads(min(2, torch.get_num_threads()))
