"""The one batched prediction loop: decode -> the card's preprocessing -> batch -> infer ->
restore, used by ``salseg-predict``, ``salseg-eval`` model mode, the :class:`Predictor` API,
the multi-process shards and the benchmarks.

:func:`predict_items` decodes every item in DataLoader workers with a ``decode`` callable
(``item -> (uint8 RGB array, gray flag)``), normalises it with ``predictor.prepare`` (the
:class:`~salseg.models.preprocess.Preprocessor` built from the model card), stacks ``batch_size``
inputs for one ``predictor.infer`` call and yields one :class:`Prediction` per item, in order.
``Prediction.alpha()`` runs ``predictor.finish`` (restore to the image size, refinement); callers
may run it in threads.  A failure (decode or inference) is reported on the item
(``error``/``exception``), never raised, so each caller applies its own policy: the CLI reports
and goes on, the API and model mode re-raise.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

Decoded = tuple[np.ndarray, bool]


@dataclass
class Prediction:
    """One item's result: ``prob`` at model resolution (``None`` on failure), the original
    ``size``, the decoded ``image`` if asked for, or the ``error`` that stopped it."""

    index: int
    item: Any
    predictor: Any
    prob: torch.Tensor | None = None
    size: tuple[int, int] | None = None
    image: np.ndarray | None = None
    error: str | None = None
    exception: BaseException | None = None

    def alpha(self) -> np.ndarray:
        """Float32 alpha at the original size (``predictor.finish``)."""
        if self.prob is None:
            raise self.exception or RuntimeError(self.error)
        return self.predictor.finish(self.prob, self.size)

    def raise_error(self) -> None:
        """Re-raise the failure of this item, if any (the API's policy)."""
        if self.error is not None:
            raise self.exception or RuntimeError(self.error)


def describe(exc: BaseException) -> str:
    """A one-line description of a per-item failure."""
    from salseg.data.errors import DataError

    if isinstance(exc, DataError):
        return exc.problem
    if isinstance(exc, MemoryError):
        return "out of memory while decoding (lower --max-pixels)"
    return f"{type(exc).__name__}: {exc}"


class _Decode(Dataset):
    """Decode and prepare items; failures come back as records, never as exceptions."""

    def __init__(self, items: Sequence, decode: Callable[[Any], Decoded], prepare: Callable,
                 keep_image: bool) -> None:
        self.items, self.decode, self.prepare, self.keep_image = items, decode, prepare, keep_image

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        try:
            image, gray = self.decode(self.items[index])
            x = self.prepare(image, gray)
        except Exception as exc:  # noqa: BLE001 - reported by the caller, by name
            # an exception object crosses a worker boundary only as its description
            in_worker = torch.utils.data.get_worker_info() is not None
            return {"index": index, "error": describe(exc),
                    "exception": None if in_worker else exc}
        return {"index": index, "error": None, "input": x, "size": tuple(image.shape[:2]),
                "image": torch.from_numpy(np.array(image)) if self.keep_image else None}


def _collate(samples: list[dict]) -> list[dict]:
    return samples


def predict_items(predictor: Any, items: Sequence, decode: Callable[[Any], Decoded],
                  batch_size: int = 1, num_workers: int = 0, keep_image: bool = False,
                  worker_init_fn: Callable[[int], None] | None = None) -> Iterator[Prediction]:
    """Yield a :class:`Prediction` for every item of ``items``, in order (see the module)."""
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    device = getattr(predictor, "device", None)
    loader = DataLoader(_Decode(items, decode, predictor.prepare, keep_image),
                        batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=_collate, worker_init_fn=worker_init_fn,
                        pin_memory=getattr(device, "type", None) == "cuda",
                        persistent_workers=False)
    for batch in loader:
        good = [s for s in batch if s["error"] is None]
        probs: Sequence[torch.Tensor | None] = [None] * len(good)
        failure: tuple[str, BaseException] | None = None
        if good:
            try:
                probs = predictor.infer(torch.stack([s["input"] for s in good]))
            except Exception as exc:  # noqa: BLE001 - e.g. out of GPU memory
                failure = (f"inference failed ({type(exc).__name__}: {exc})", exc)
        results = {id(s): p for s, p in zip(good, probs)}
        for s in batch:
            i = s["index"]
            if s["error"] is not None:
                yield Prediction(i, items[i], predictor, error=s["error"],
                                 exception=s.get("exception"))
            elif failure is not None:
                yield Prediction(i, items[i], predictor, error=failure[0], exception=failure[1])
            else:
                image = s["image"].numpy() if s["image"] is not None else None
                yield Prediction(i, items[i], predictor, prob=results[id(s)], size=s["size"],
                                 image=image)
