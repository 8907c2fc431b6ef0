"""Atomic file writing: an output appears complete or not at all, and is never replaced unless
asked.

Data go to a hidden temporary file in the destination folder, then move into place in one
step.  Without ``overwrite`` the move is a hard link, which fails if the destination appeared in
the meantime (on file systems without hard links: an existence check, then ``os.replace``).
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class OutputExistsError(FileExistsError):
    """The destination exists and overwriting was not requested."""


@contextmanager
def atomic_output(path: str | Path, overwrite: bool = False, suffix: str = ".tmp"
                  ) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder; when the block succeeds, move it to ``path``.

    For writers that need a file name (``np.save``, ``torch.save``, ``onnx.save``, ...).  The
    temporary file is removed whatever happens; without ``overwrite`` an existing destination
    raises :class:`OutputExistsError` (before and after the block).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not overwrite and path.exists():
        raise OutputExistsError(f"{path}: exists (use --overwrite to replace it)")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        _commit(Path(tmp), path, overwrite)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _commit(tmp: Path, path: Path, overwrite: bool) -> None:
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise OutputExistsError(f"{path}: exists (use --overwrite to replace it)") from None
    except OSError:  # no hard links here (some network / FAT file systems)
        if path.exists():
            raise OutputExistsError(f"{path}: exists (use --overwrite)") from None
        os.replace(tmp, path)


def write_bytes_atomic(data: bytes, path: str | Path, overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically; raise :class:`OutputExistsError` if it exists."""
    with atomic_output(path, overwrite) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return Path(path)


def write_text_atomic(text: str, path: str | Path, overwrite: bool = False) -> Path:
    """``write_bytes_atomic`` for UTF-8 text."""
    return write_bytes_atomic(text.encode("utf-8"), path, overwrite=overwrite)
