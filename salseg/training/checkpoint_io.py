"""Checkpoint files that survive a kill, and a check that a checkpoint is whole before resuming.

``AtomicCheckpointIO`` is the Trainer's checkpoint plugin: every checkpoint (``last.ckpt``, top-k,
phase-1 encoder) is serialised in memory, written to a hidden temporary file in the destination
folder, flushed to disk and renamed into place (:mod:`salseg.atomic`).  Lightning's own writer
stages the file in ``$TMPDIR`` and moves it, which is a copy, not a rename, when ``$TMPDIR`` is
on another file system (tmpfs, container bind mounts): a kill in the middle left an empty or
truncated ``last.ckpt``.

``check_checkpoint_file(path)`` tells a missing, empty, truncated or foreign file apart before
any training starts (a ``.ckpt`` is a zip archive; every member's CRC is verified).
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from salseg.atomic import write_bytes_atomic


class CheckpointFileError(ValueError):
    """A checkpoint file is missing, incomplete or not a checkpoint; names the file."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose saves are temp file in the destination folder + rename."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path,
                        storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO does not take storage_options")
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        write_bytes_atomic(buffer.getbuffer(), Path(path), overwrite=True)


def check_checkpoint_file(path: str | Path, key: str = "ckpt_path") -> Path:
    """Raise :class:`CheckpointFileError` unless ``path`` is a complete torch checkpoint."""
    p = Path(path)
    what = f"{key}={path}"
    if not p.is_file():
        raise CheckpointFileError(f"{what}: file not found (give the path of a .ckpt file, e.g. "
                                  "<run>/checkpoints/last.ckpt)")
    if p.stat().st_size == 0:
        raise CheckpointFileError(f"{what}: the file is empty (a save was interrupted); resume "
                                  "from another checkpoint of the run")
    try:
        with zipfile.ZipFile(p) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise CheckpointFileError(
            f"{what}: not a complete checkpoint ({err}); the file is truncated or is not a "
            "Lightning .ckpt - resume from another checkpoint of the run") from None
    if bad is not None:
        raise CheckpointFileError(f"{what}: the archive member {bad} is corrupt; resume from "
                                  "another checkpoint of the run")
    return p
