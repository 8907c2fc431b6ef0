"""Micro-batching of inference requests onto one model copy.

Every request puts one preprocessed input ``(3, h, w)`` into a bounded queue; one worker thread
per model takes the first waiting input, collects up to ``max_batch`` inputs that arrive within
``max_wait`` seconds, runs them as one forward pass and hands each request its probability map.
A full queue is refused at once (:class:`QueueFull`), so memory stays bounded under load; a
request that gave up (timeout, client gone) before its batch started is dropped unrun.
"""
from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

import torch


class QueueFull(RuntimeError):
    """The model's request queue is full."""


@dataclass
class _Job:
    x: torch.Tensor
    future: Future


_STOP = object()


class Batcher:
    """Queue + worker thread running ``infer(batch) -> probs`` on batches of waiting inputs."""

    def __init__(self, infer: Callable[[torch.Tensor], torch.Tensor], max_batch: int = 8,
                 max_wait: float = 0.01, max_queue: int = 64, name: str = "model") -> None:
        if max_batch < 1 or max_queue < 1 or max_wait < 0:
            raise ValueError("max_batch and max_queue must be >= 1 and max_wait >= 0")
        self.infer = infer
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.max_queue = max_queue
        self.batches = 0  # forward passes run
        self.images = 0  # inputs inferred
        self.largest_batch = 0
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._thread = threading.Thread(target=self._loop, name=f"salseg-batch-{name}",
                                        daemon=True)
        self._thread.start()

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def submit(self, x: torch.Tensor) -> Future:
        """Queue one input; the future resolves to its probability map ``(1, h, w)``."""
        future: Future = Future()
        try:
            self._queue.put_nowait(_Job(x, future))
        except queue.Full:
            raise QueueFull(f"the request queue is full ({self.max_queue} waiting); "
                            "retry later") from None
        return future

    def close(self) -> None:
        """Stop the worker after the inputs already queued."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout=30)

    def _collect(self, first: _Job) -> tuple[list[_Job], bool]:
        jobs, stop = [first], False
        deadline = time.monotonic() + self.max_wait
        while len(jobs) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                job = self._queue.get(timeout=remaining) if remaining > 0 else \
                    self._queue.get_nowait()
            except queue.Empty:
                break
            if job is _STOP:
                stop = True
                break
            jobs.append(job)
        return jobs, stop

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            jobs, stop = self._collect(first)
            jobs = [j for j in jobs if j.future.set_running_or_notify_cancel()]
            if jobs:
                try:
                    probs = self.infer(torch.stack([j.x for j in jobs]))
                except BaseException as exc:  # noqa: BLE001 - handed to every waiting request
                    for j in jobs:
                        j.future.set_exception(exc)
                else:
                    self.batches += 1
                    self.images += len(jobs)
                    self.largest_batch = max(self.largest_batch, len(jobs))
                    for j, p in zip(jobs, probs):
                        j.future.set_result(p)
            if stop:
                return
