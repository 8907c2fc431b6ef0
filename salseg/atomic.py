"""Atomic file writing: an output appears complete or not at all, and is never replaced unless
asked.

Data go to a hidden temporary file in the destination folder, then move into place in one
step.  Without ``overwrite`` the move is a hard link, which fails if the destination appeared in
the meantime (on file systems without hard links: an existence check, then ``os.replace``).

Temporary files and folders come from :func:`mkstemp` / :func:`mkdtemp` here, which give them
the mode an ordinary ``open()`` / ``mkdir`` would (``0666`` / ``0777`` less the umask, so 0644
and 0755 under umask 022) instead of :mod:`tempfile`'s private 0600 / 0700: every file salseg
writes honours the umask, as Lightning's own checkpoints do.
"""
from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_UMASK_LOCK = threading.Lock()


class OutputExistsError(FileExistsError):
    """The destination exists and overwriting was not requested."""


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux ``/proc``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:  # elsewhere: set and restore (the lock keeps our own threads consistent)
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def mkstemp(dir: str | Path, prefix: str = "", suffix: str = ".tmp") -> tuple[int, str]:
    """``tempfile.mkstemp`` whose file gets the mode of a plain ``open()`` (0666 & ~umask)."""
    fd, tmp = tempfile.mkstemp(dir=dir, prefix=prefix, suffix=suffix)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o666 & ~current_umask())
    except BaseException:
        os.close(fd)
        Path(tmp).unlink(missing_ok=True)
        raise
    return fd, tmp


def follow_umask(path: str | Path) -> None:
    """Give ``path`` the mode of a plain ``open()`` (0666 & ~umask): for writers that replace
    the temporary file with a new private one (``safetensors.save_file``)."""
    os.chmod(path, 0o666 & ~current_umask())


def mkdtemp(dir: str | Path, prefix: str = "") -> str:
    """``tempfile.mkdtemp`` whose folder gets the mode of a plain ``mkdir`` (0777 & ~umask)."""
    tmp = tempfile.mkdtemp(dir=dir, prefix=prefix)
    os.chmod(tmp, 0o777 & ~current_umask())
    return tmp


class OutputFolderError(OSError):
    """An output folder that cannot be created or written into (named in the message)."""


def ensure_writable_dir(folder: str | Path) -> Path:
    """Create ``folder`` if needed and prove it is writable by creating (and deleting) a temporary
    file in it; raise :class:`OutputFolderError` naming it otherwise.  Run before long work, so
    that a read-only or file-typed output is found before any result is computed."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputFolderError(f"output folder {folder}: exists and is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = mkstemp(folder, prefix=".write-test-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise OutputFolderError(f"output folder {folder}: cannot write into it "
                                f"({exc.strerror or exc})") from None
    return folder


@contextmanager
def atomic_output(path: str | Path, overwrite: bool = False, suffix: str = ".tmp"
                  ) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder; when the block succeeds, move it to ``path``.

    For writers that need a file name (``np.save``, ``torch.save``, ``onnx.save``, ...).  The
    temporary file (mode per the umask, see :func:`mkstemp`) is removed whatever happens;
    without ``overwrite`` an existing destination raises :class:`OutputExistsError` (before and
    after the block).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not overwrite and path.exists():
        raise OutputExistsError(f"{path}: exists (use --overwrite to replace it)")
    fd, tmp = mkstemp(path.parent, prefix=f".{path.name}.", suffix=suffix)
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
