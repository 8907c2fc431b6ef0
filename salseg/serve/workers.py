"""Worker processes for the pixel work of ``salseg-serve``, so that a timeout really stops it.

Decoding an upload and finishing its mask (restore to full size, clean-up options, compositing,
PNG encoding) run in a small pool of processes forked from a ``forkserver`` that has imported
the pixel code once (a fork costs milliseconds, not an interpreter start).  The event loop waits
on them from threads that only block in ``recv``, so ``/health`` and every other request stay
answered during heavy work, whatever the libraries do with the GIL.  When a request is
abandoned (its timeout, the server stopping), the worker running its step is killed at once and
a fresh one replaces it when next needed: no abandoned work keeps running.

Each step is a plain module-level function and its arguments (pickled); its result comes back
the same way.  :class:`~salseg.serve.outputs.UploadError` raised by a step keeps its status.
"""
from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import threading
from collections.abc import Callable
from typing import Any

from salseg.serve.outputs import UploadError

_PRELOAD = ["salseg.serve.outputs"]


def _serve(conn: Any) -> None:  # the worker process's loop
    import torch

    torch.set_num_threads(1)
    while True:
        try:
            fn, args = conn.recv()
        except (EOFError, OSError):
            return
        try:
            reply: tuple = ("ok", fn(*args))
        except UploadError as exc:
            reply = ("upload", exc.status, exc.message)
        except MemoryError:
            reply = ("upload", 503, "out of memory while processing the image; retry later")
        except Exception as exc:  # noqa: BLE001 - reported to the request as a 500
            reply = ("error", f"{type(exc).__name__}: {exc}")
        try:
            conn.send(reply)
        except (BrokenPipeError, OSError):
            return


class _Worker:
    def __init__(self, ctx: Any) -> None:
        self.conn, child = ctx.Pipe(duplex=True)
        self.process = ctx.Process(target=_serve, args=(child,), daemon=True,
                                   name="salseg-serve-worker")
        self.process.start()
        child.close()

    def call(self, fn: Callable, args: tuple) -> tuple:
        self.conn.send((fn, args))
        return self.conn.recv()

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)
        self.conn.close()


class WorkerPool:
    """At most ``size`` steps at once, each in its own worker process (``size=0``: run the steps
    in threads of the server process; nothing can stop them then)."""

    def __init__(self, size: int) -> None:
        if size < 0:
            raise ValueError(f"workers must be >= 0, got {size}")
        self.size = size
        self._idle: list[_Worker] = []
        self._all: set[_Worker] = set()
        self._lock = threading.Lock()
        self._slots: asyncio.Semaphore | None = None
        self._per_client: dict[str, list] = {}  # client -> [semaphore, users]
        self.killed = 0  # workers killed with an abandoned step
        self._ctx = None
        if size:
            method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() \
                else "spawn"
            self._ctx = multiprocessing.get_context(method)
            if method == "forkserver":
                self._ctx.set_forkserver_preload(_PRELOAD)

    @property
    def pids(self) -> list[int]:
        with self._lock:
            return [w.process.pid for w in self._all if w.process.pid is not None]

    def _take(self) -> _Worker:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        worker = _Worker(self._ctx)
        with self._lock:
            self._all.add(worker)
        return worker

    def prestart(self) -> None:
        """Start the forkserver and one idle worker (blocking; call it from a thread at
        start-up, so that the first request does not wait for the imports)."""
        if self.size:
            worker = self._take()
            with self._lock:
                self._idle.append(worker)

    def _keep(self, taking: asyncio.Future) -> None:
        if not taking.cancelled() and taking.exception() is None:
            with self._lock:
                self._idle.append(taking.result())

    def _discard(self, worker: _Worker) -> None:
        with self._lock:
            self._all.discard(worker)
        worker.kill()

    @contextlib.asynccontextmanager
    async def _client_slot(self, client: str | None):  # noqa: ANN202
        """One client (address) holds at most ``size - 1`` workers (1 when ``size`` is 1), so
        that costly requests from one address leave a worker to the others."""
        if client is None or self.size < 2:
            yield
            return
        entry = self._per_client.setdefault(client, [asyncio.Semaphore(self.size - 1), 0])
        entry[1] += 1
        try:
            async with entry[0]:
                yield
        finally:
            entry[1] -= 1
            if not entry[1]:
                del self._per_client[client]

    async def run(self, fn: Callable, *args: Any, client: str | None = None) -> Any:
        """``fn(*args)`` in a worker; cancelling the awaiting task kills the worker."""
        if not self.size:
            return await asyncio.to_thread(fn, *args)
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.size)
        async with self._client_slot(client), self._slots:
            taking = asyncio.ensure_future(asyncio.to_thread(self._take))
            try:
                worker = await asyncio.shield(taking)
            except asyncio.CancelledError:  # a worker forked for nobody goes back to idle
                taking.add_done_callback(self._keep)
                raise
            healthy = False
            try:
                reply = await asyncio.to_thread(worker.call, fn, args)
                healthy = True
            except (EOFError, OSError, BrokenPipeError):
                raise UploadError(500, "the worker processing this image died (out of "
                                       "memory?)") from None
            finally:
                if healthy:
                    with self._lock:
                        self._idle.append(worker)
                else:  # abandoned (cancelled) or dead: never reused
                    self.killed += 1
                    self._discard(worker)
        if reply[0] == "ok":
            return reply[1]
        if reply[0] == "upload":
            raise UploadError(reply[1], reply[2])
        raise UploadError(500, f"processing failed ({reply[1]})")

    def close(self) -> None:
        with self._lock:
            workers, self._all, self._idle = list(self._all), set(), []
        for worker in workers:
            worker.kill()


def rss_bytes(pids: list[int]) -> int:
    """Resident memory of the given processes (Linux ``/proc``; 0 where unknown)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status", encoding="ascii") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            pass
    return total


__all__ = ["WorkerPool", "rss_bytes"]
