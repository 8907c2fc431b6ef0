"""Shared pytest set-up: make ``tests/`` importable (fixture helpers), put the interpreter's
``bin/`` (the venv's console scripts, as in an activated shell) first on PATH for subprocess
tests, and keep torch quiet."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
# `make test` runs .venv/bin/python without activating the venv: tests that run `salseg-*` by
# name must find the scripts of the interpreter under test, not whatever PATH holds
os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent),
                                      os.environ.get("PATH", "")])
torch.set_num_threads(min(2, torch.get_num_threads()))
