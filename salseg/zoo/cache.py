"""Downloading and caching the zoo's files: checksums, mirrors, offline mode, locking.

Layout under ``$SALSEG_HOME`` (default ``~/.cache/salseg``)::

    zoo/downloads/<original file name>          the verified source files
    zoo/downloads/<name>.verified               size / mtime / checksum stamp (skips re-hashing)
    zoo/converted/<entry>-<sha12>.safetensors    ONNX sources converted to state dicts
    zoo/pins.json                               sha256 of first verified downloads of unpinned
                                                sources (trust on first use)

Environment:

* ``SALSEG_OFFLINE=1``: only the cache is used; a miss names the file(s) and the folder to put
  them in;
* ``SALSEG_ZOO_MIRROR=<base>``: every source's file is first fetched as ``<base>/<file name>``
  (an http(s) URL, or a local folder / ``file://`` URL), with the same checksums.

Sources are tried in order (mirror copies first); a failure (HTTP error, timeout, interrupted
transfer, checksum mismatch) moves on to the next one, and the final error lists every attempt.
A download goes to a temporary file in the destination folder and is moved into place only once
its checksum is verified, so no partial or unverified file is ever where a later run looks; a
file lock per file makes concurrent downloads of the same file safe (the second process waits
and then finds the verified file).

HTTP transfers (with a progress bar and timeouts) are done by pooch's ``HTTPDownloader``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse

from filelock import FileLock

from salseg.atomic import write_text_atomic
from salseg.zoo.catalogue import Source, ZooEntry

log = logging.getLogger(__name__)
TIMEOUT = (15, 60)  # connect, read (seconds)


class ZooError(RuntimeError):
    """A zoo file could not be obtained or failed verification."""


class ChecksumError(ZooError):
    """A file's checksum differs from the pinned (or first recorded) one."""


# -- locations and switches -----------------------------------------------------------------
def home() -> Path:
    """``$SALSEG_HOME`` or ``~/.cache/salseg``."""
    return Path(os.environ.get("SALSEG_HOME") or "~/.cache/salseg").expanduser()


def downloads_dir() -> Path:
    return home() / "zoo" / "downloads"


def converted_dir() -> Path:
    return home() / "zoo" / "converted"


def offline() -> bool:
    return os.environ.get("SALSEG_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def mirror() -> str | None:
    base = os.environ.get("SALSEG_ZOO_MIRROR", "").strip()
    return base or None


def lock_for(path: Path) -> FileLock:
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path) + ".lock")


# -- checksums --------------------------------------------------------------------------------
def file_hash(path: str | Path, algorithm: str = "sha256") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _split(checksum: str) -> tuple[str, str]:
    alg, _, digest = checksum.partition(":")
    if not digest or alg not in ("md5", "sha256"):
        raise ValueError(f"bad checksum {checksum!r} (expected md5:<hex> or sha256:<hex>)")
    return alg, digest.lower()


def _pins_path() -> Path:
    return home() / "zoo" / "pins.json"


def _read_pins() -> dict[str, str]:
    path = _pins_path()
    if not path.is_file():
        return {}
    try:
        return dict(json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:
        raise ZooError(f"{path}: unreadable record of first downloads ({exc}); fix or delete "
                       "it (unpinned files will then be trusted again on their next download)"
                       ) from exc


def recorded_pin(source: Source) -> str | None:
    """The sha256 recorded at the first verified download of an unpinned source."""
    return _read_pins().get(source.filename)


def _record_pin(source: Source, sha256: str) -> None:
    path = _pins_path()
    with lock_for(path):
        pins = _read_pins()
        pins.setdefault(source.filename, f"sha256:{sha256}")
        write_text_atomic(json.dumps(pins, indent=2, sort_keys=True) + "\n", path, overwrite=True)


def expected_checksum(source: Source) -> str | None:
    """The checksum a file of ``source`` must have: pinned, else the first recorded one."""
    return source.checksum or recorded_pin(source)


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _check_file(path: Path, source: Source, full: bool = False) -> str:
    """Verify ``path`` against ``source``; return its checksum; raise ChecksumError if it differs.

    A stamp beside the file (size, mtime, checksum) avoids re-hashing unchanged files unless
    ``full``.
    """
    want = expected_checksum(source)
    stat = path.stat()
    stamp = _stamp_path(path)
    if not full and want and stamp.is_file():
        try:
            rec = json.loads(stamp.read_text())
            if rec == {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "checksum": want}:
                return want
        except ValueError:
            pass
    if want is None:  # unpinned and never recorded: record it now (trust on first use)
        sha = file_hash(path, "sha256")
        _record_pin(source, sha)
        want = f"sha256:{sha}"
        got = want
    else:
        alg, digest = _split(want)
        actual = file_hash(path, alg)
        got = f"{alg}:{actual}"
        if actual != digest:
            kind = "pinned" if source.pinned else "recorded at the first download"
            raise ChecksumError(f"{path}: checksum {got} differs from the {kind} {want} "
                                f"({source.origin}); the file is corrupted or not the "
                                "published one")
    write_text_atomic(json.dumps({"size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                                  "checksum": want}), stamp, overwrite=True)
    return got


def verify_file(path: str | Path, source: Source) -> str:
    """Fully re-hash ``path`` and check it against ``source`` (``salseg-models verify``)."""
    return _check_file(Path(path), source, full=True)


# -- finding and fetching ---------------------------------------------------------------------
def cache_path(source: Source) -> Path:
    return downloads_dir() / source.filename


def _unique_files(entry: ZooEntry) -> list[Source]:
    seen: dict[str, Source] = {}
    for src in entry.sources:
        seen.setdefault(src.filename, src)
    return list(seen.values())


def find_cached(entry: ZooEntry) -> tuple[Path, Source] | None:
    """A verified cached file of ``entry`` (first source order), or ``None``.

    A cached file that fails its checksum raises :class:`ChecksumError` in offline mode; online
    it is logged and ignored (a fresh verified download replaces it).
    """
    for src in _unique_files(entry):
        path = cache_path(src)
        if not path.is_file():
            continue
        with lock_for(path):
            if not path.is_file():
                continue
            try:
                _check_file(path, src)
            except ChecksumError:
                if offline():
                    raise
                log.warning("ignoring corrupted cache file %s (it will be downloaded again)",
                            path)
                continue
        return path, src
    return None


def _is_local(url: str) -> bool:
    return url.startswith("file://") or "://" not in url


def _local_path(url: str) -> Path:
    return Path(unquote(urlparse(url).path)) if url.startswith("file://") else Path(url)


def _transfer(url: str, tmp: Path, progress: bool) -> None:
    if _is_local(url):
        src = _local_path(url)
        if not src.is_file():
            raise FileNotFoundError(f"no such file {src}")
        shutil.copyfile(src, tmp)
        return
    import pooch

    downloader = pooch.HTTPDownloader(progressbar=progress, timeout=TIMEOUT)
    downloader(url, str(tmp), None)


def _download(url: str, source: Source, progress: bool) -> Path:
    """Fetch ``url`` into the cache as ``source.filename``, verified; nothing left on failure."""
    target = cache_path(source)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    os.close(fd)
    tmp = Path(name)
    try:
        _transfer(url, tmp, progress)
        if tmp.stat().st_size == 0:
            raise ZooError("empty file")
        want = expected_checksum(source)
        if want is not None:
            alg, digest = _split(want)
            actual = file_hash(tmp, alg)
            if actual != digest:
                kind = "pinned" if source.pinned else "recorded at the first download"
                raise ChecksumError(f"checksum {alg}:{actual} differs from the {kind} {want}")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    _check_file(target, source)  # records the pin of an unpinned source, writes the stamp
    return target


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def missing_message(entry: ZooEntry) -> str:
    files = ", ".join(f"{s.filename} ({expected_checksum(s) or 'unpinned'})"
                      for s in _unique_files(entry))
    return (f"model-zoo checkpoint {entry.name!r} is not in the cache and SALSEG_OFFLINE is set; "
            f"put one of these files into {downloads_dir()}: {files}")


def fetch(entry: ZooEntry, progress: bool = True) -> tuple[Path, Source]:
    """A verified local file of ``entry``: from the cache, else downloaded (mirror first)."""
    hit = find_cached(entry)
    if hit is not None:
        return hit
    if offline():
        raise ZooError(missing_message(entry))
    candidates: list[tuple[str, Source]] = []
    base = mirror()
    if base:
        sep = "" if base.endswith("/") else "/"
        candidates += [(f"{base}{sep}{s.filename}", s) for s in _unique_files(entry)]
    candidates += [(s.url, s) for s in entry.sources]
    attempts = []
    for url, src in candidates:
        target = cache_path(src)
        with lock_for(target):
            if target.is_file():  # another process finished it meanwhile
                try:
                    _check_file(target, src)
                    return target, src
                except ChecksumError as exc:
                    attempts.append(f"{target} (cache): {_reason(exc)}")
            try:
                log.info("downloading %s from %s", src.filename, url)
                return _download(url, src, progress), src
            except Exception as exc:  # noqa: BLE001 - every failure moves on to the next source
                attempts.append(f"{url}: {_reason(exc)}")
    lines = "\n".join(f"  - {a}" for a in attempts)
    raise ZooError(f"could not obtain model-zoo checkpoint {entry.name!r}; tried:\n{lines}\n"
                   f"alternatively put one of the files by hand into {downloads_dir()} "
                   f"({', '.join(s.filename for s in _unique_files(entry))})")
