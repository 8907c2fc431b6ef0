"""Atomic file writing: an output appears complete or not at all, and is never replaced unless
asked.

Data go to a hidden temporary file in the destination folder, then move into place in one
step.  Without ``overwrite`` the move is a hard link, which fails if the destination appeared in
the meantime (on file systems without hard links: an existence check, then ``os.replace``).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


class OutputExistsError(FileExistsError):
    """The destination exists and overwriting was not requested."""


def write_bytes_atomic(data: bytes, path: str | Path, overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically; raise :class:`OutputExistsError` if it exists."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not overwrite and path.exists():
        raise OutputExistsError(f"{path}: exists (use --overwrite to replace it)")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise OutputExistsError(f"{path}: exists (use --overwrite to replace it)") from None
            except OSError:  # no hard links here (some network / FAT file systems)
                if path.exists():
                    raise OutputExistsError(f"{path}: exists (use --overwrite)") from None
                os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def write_text_atomic(text: str, path: str | Path, overwrite: bool = False) -> Path:
    """``write_bytes_atomic`` for UTF-8 text."""
    return write_bytes_atomic(text.encode("utf-8"), path, overwrite=overwrite)
