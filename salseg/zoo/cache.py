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

* ``SALSEG_DOWNLOAD_DEADLINE=<seconds>``: the longest one file's transfer may take (default
  3600); a mirror that trickles bytes is abandoned then, whatever its per-read pace.

Sources are tried in order (mirror copies first); a failure (HTTP error, timeout, deadline,
interrupted transfer, an HTML page, a file of the wrong format, checksum mismatch) moves on to
the next one, and the final error lists every attempt.  A body that is an HTML page (a quota,
login or error page answered with ``200``) is refused by name; a download of an unpinned source
must also be a loadable file of its format (``weights_only`` checkpoint, ONNX graph or
safetensors) whose tensors fit the entry's architecture before its sha256 is recorded
(:mod:`salseg.zoo.validate`).  ``salseg-models forget NAME`` deletes a name's cached files and
recorded checksums.
A download goes to a temporary file in the destination folder and is moved into place only once
its checksum is verified, so no partial or unverified file is ever where a later run looks; a
file lock per file makes concurrent downloads of the same file safe (the second process waits
and then finds the verified file).  Temporary ``.part`` files that a killed run left behind are
deleted by the next download of that file (under its lock).  Cached files get the mode of any
other output (``0666`` less the umask).  A read-only cache works for files already in it (no
lock file is needed to read a verified file); a download into it is refused with an error
naming the folder.

HTTP transfers (urllib, with a progress bar) read at most one network buffer at a time, so the
per-read timeout (60 s) and the overall deadline both hold.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse

from filelock import FileLock

from salseg.atomic import mkstemp, write_text_atomic
from salseg.zoo.catalogue import Source, ZooEntry
from salseg.zoo.errors import ZooError

log = logging.getLogger(__name__)
READ_TIMEOUT = 60.0  # seconds one network read may wait
DEFAULT_DEADLINE = 3600.0  # seconds one file's transfer may take (SALSEG_DOWNLOAD_DEADLINE)


class ChecksumError(ZooError):
    """A file's checksum differs from the pinned (or first recorded) one."""


class CacheNotWritableError(ZooError):
    """The cache folder cannot be written (a read-only ``SALSEG_HOME``)."""


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


def deadline() -> float:
    """Seconds one file's transfer may take: ``SALSEG_DOWNLOAD_DEADLINE`` or 3600."""
    text = os.environ.get("SALSEG_DOWNLOAD_DEADLINE", "").strip()
    if not text:
        return DEFAULT_DEADLINE
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise ZooError(f"SALSEG_DOWNLOAD_DEADLINE={text!r}: expected a positive number of seconds")
    return value


def _not_writable(folder: Path, exc: OSError) -> CacheNotWritableError:
    return CacheNotWritableError(
        f"cannot write to the model-zoo cache {folder} ({exc.strerror or exc}); make it "
        "writable or set SALSEG_HOME to a writable folder (a read-only cache only serves the "
        "files already in it)")


@contextlib.contextmanager
def lock_for(path: Path) -> Iterator[None]:
    """Hold the file lock of ``path`` (``<path>.lock``); a cache that cannot be written raises
    :class:`CacheNotWritableError` naming the folder."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(path) + ".lock")
        lock.acquire()
    except OSError as exc:
        raise _not_writable(path.parent, exc) from None
    try:
        yield
    finally:
        lock.release()


@contextlib.contextmanager
def _lock_if_writable(path: Path) -> Iterator[None]:
    """The lock of ``path`` where the cache can be written; none on a read-only cache (which
    no process can change: reading its verified files needs no lock)."""
    try:
        with lock_for(path):
            yield
            return
    except CacheNotWritableError:
        pass
    yield


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


def pins_path() -> Path:
    """Where the sha256 of first downloads of unpinned sources are recorded."""
    return _pins_path()


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


def mismatch_message(path: Path | str, source: Source, got: str, want: str,
                     name: str | None) -> str:
    """The checksum error: what differs, where the expected value lives, how to reset it."""
    forget = f"salseg-models forget {name}" if name else "salseg-models forget NAME"
    if source.pinned:
        return (f"{path}: checksum {got} differs from the pinned {want} ({source.origin}); the "
                f"file is corrupted or not the published one; delete it ({forget}) and "
                "download it again")
    return (f"{path}: checksum {got} differs from the sha256 {want} recorded at the first "
            f"download of {source.filename} ({source.origin}) in {_pins_path()}; if that first "
            f"download was wrong (an HTML page, a truncated file), reset it with '{forget}'")


def _write_stamp(stamp: Path, record: dict) -> None:
    try:
        write_text_atomic(json.dumps(record), stamp, overwrite=True)
    except OSError as exc:  # a read-only cache: verified again next time
        log.debug("cannot write %s (%s)", stamp, exc)


def _check_file(path: Path, source: Source, full: bool = False, name: str | None = None) -> str:
    """Verify ``path`` against ``source``; return its checksum; raise ChecksumError if it differs.

    A stamp beside the file (size, mtime, checksum) avoids re-hashing unchanged files unless
    ``full``.  ``name``: the catalogue name, for the error's reset hint.
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
            raise ChecksumError(mismatch_message(path, source, got, want, name))
    _write_stamp(stamp, {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "checksum": want})
    return got


def verify_file(path: str | Path, source: Source, name: str | None = None) -> str:
    """Fully re-hash ``path`` and check it against ``source`` (``salseg-models verify``)."""
    return _check_file(Path(path), source, full=True, name=name)


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
        with _lock_if_writable(path):
            if not path.is_file():
                continue
            try:
                _check_file(path, src, name=entry.name)
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


def _transfer(url: str, tmp: Path, progress: bool, limit: float, desc: str = "") -> None:
    """Copy ``url`` into ``tmp`` within ``limit`` seconds; refuse an HTML page by name."""
    if _is_local(url):
        src = _local_path(url)
        if not src.is_file():
            raise FileNotFoundError(f"no such file {src}")
        shutil.copyfile(src, tmp)
        return
    import urllib.request

    from salseg import __version__

    end = time.monotonic() + limit
    request = urllib.request.Request(url, headers={"User-Agent": f"salseg/{__version__}"})
    with urllib.request.urlopen(request, timeout=min(READ_TIMEOUT, limit)) as resp, \
            open(tmp, "wb") as fh:
        if "text/html" in (resp.headers.get("Content-Type") or "").lower():
            raise ZooError(_HTML_PAGE)
        length = resp.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        bar = _progress_bar(total, desc if progress else None)
        got = 0
        try:
            while True:
                if time.monotonic() > end:
                    raise ZooError(f"the transfer took longer than the {limit:g} s deadline "
                                   f"({got} bytes received); set SALSEG_DOWNLOAD_DEADLINE="
                                   "<seconds> to allow more")
                chunk = resp.read1(1 << 20)  # at most one network read: the deadline holds
                if not chunk:
                    break
                fh.write(chunk)
                got += len(chunk)
                if bar is not None:
                    bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
        if total is not None and got < total:
            raise ZooError(f"transfer interrupted: {got} of {total} bytes received")


_HTML_PAGE = ("the server sent an HTML page (a quota, login or error page?) instead of the "
              "checkpoint file")


def _progress_bar(total: int | None, desc: str | None):  # noqa: ANN202 - tqdm or None
    if desc is None:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
                leave=False)


def _looks_like_html(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(1024).lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return head.startswith((b"<!doctype html", b"<html", b"<head", b"<body", b"<!--"))


def _remove_stale_parts(target: Path) -> None:
    """Delete ``.part`` files of ``target`` that a killed download left (call under its lock:
    no live download of that file can own one then)."""
    for part in target.parent.glob(f".{target.name}.*.part"):
        log.info("removing %s, left by an interrupted download", part)
        part.unlink(missing_ok=True)


def _download(url: str, source: Source, progress: bool, entry: ZooEntry | None = None) -> Path:
    """Fetch ``url`` into the cache as ``source.filename``, verified; nothing left on failure.

    Call under the lock of the cache file."""
    from salseg.zoo.validate import validate_download

    target = cache_path(source)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_parts(target)
        fd, name = mkstemp(target.parent, prefix=f".{target.name}.", suffix=".part")
    except OSError as exc:
        raise _not_writable(target.parent, exc) from None
    os.close(fd)
    tmp = Path(name)
    try:
        _transfer(url, tmp, progress, deadline(), source.filename)
        if tmp.stat().st_size == 0:
            raise ZooError("empty file")
        if _looks_like_html(tmp):
            raise ZooError(_HTML_PAGE)
        want = expected_checksum(source)
        if want is not None:
            alg, digest = _split(want)
            actual = file_hash(tmp, alg)
            if actual != digest:
                raise ChecksumError(mismatch_message(url, source, f"{alg}:{actual}", want,
                                                     entry.name if entry else None))
        elif entry is not None:  # trust on first use: only a file that is what it claims
            validate_download(tmp, source, entry)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    _check_file(target, source)  # records the pin of an unpinned source, writes the stamp
    return target


def forget(entry: ZooEntry) -> list[Path]:
    """Delete ``entry``'s cached files (downloads, stamps, conversions, stale parts) and the
    sha256 recorded at their first download; return what was deleted."""
    removed: list[Path] = []
    files = _unique_files(entry)
    for src in files:
        target = cache_path(src)
        if not target.parent.is_dir():
            continue
        with lock_for(target):
            for path in (target, _stamp_path(target),
                         *target.parent.glob(f".{target.name}.*.part")):
                if path.is_file():
                    path.unlink()
                    removed.append(path)
    safe = entry.name.replace("/", "--")
    for path in sorted(converted_dir().glob(f"{safe}-*.safetensors")) \
            if converted_dir().is_dir() else []:
        path.unlink()
        removed.append(path)
    pins = _pins_path()
    if pins.is_file():
        with lock_for(pins):
            recorded = _read_pins()
            names = {s.filename for s in files if not s.pinned} & set(recorded)
            if names:
                for n in names:
                    del recorded[n]
                write_text_atomic(json.dumps(recorded, indent=2, sort_keys=True) + "\n", pins,
                                  overwrite=True)
                removed.append(pins)
    return removed


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
                    _check_file(target, src, name=entry.name)
                    return target, src
                except ChecksumError as exc:
                    attempts.append(f"{target} (cache): {_reason(exc)}")
            try:
                log.info("downloading %s from %s", src.filename, url)
                return _download(url, src, progress, entry), src
            except CacheNotWritableError:
                raise
            except Exception as exc:  # noqa: BLE001 - every failure moves on to the next source
                attempts.append(f"{url}: {_reason(exc)}")
    lines = "\n".join(f"  - {a}" for a in attempts)
    raise ZooError(f"could not obtain model-zoo checkpoint {entry.name!r}; tried:\n{lines}\n"
                   f"alternatively put one of the files by hand into {downloads_dir()} "
                   f"({', '.join(s.filename for s in _unique_files(entry))})")
