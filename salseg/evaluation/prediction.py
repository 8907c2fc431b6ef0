"""Predicting test pairs for model mode (:mod:`salseg.evaluation.model`) and its parallel
shards (:mod:`salseg.evaluation.parallel`): decode each test image as the shared loop does
(:mod:`salseg.predict.loop`), predict it exactly as ``salseg-predict`` would and quantise the
map to 8 bits; ``map_name`` is the file name of a pair's saved map."""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from salseg.data.io import load_image
from salseg.data.sources import Pair
from salseg.models.restore import to_uint8
from salseg.predict.loop import predict_items
from salseg.predict.predictor import Predictor


def map_name(pair: Pair) -> str:
    return pair.stem + ("__hflip" if pair.hflip else "")


def decode_pair(pair: Pair) -> tuple[np.ndarray, bool]:
    """A test image as the loop decodes it: ``load_image``, mirrored for an ``hflip`` pair."""
    loaded = load_image(pair.image)
    image = loaded.array
    if pair.hflip:
        image = np.ascontiguousarray(image[:, ::-1])
    return image, loaded.gray


def predict_pairs(predictor: Predictor, pairs: Sequence[Pair], batch_size: int = 4,
                  num_workers: int = 0) -> Iterator[tuple[Pair, np.ndarray]]:
    """Yield ``(pair, uint8 prediction at the image's size)`` for every pair, in order (the
    shared loop of :mod:`salseg.predict.loop`; a failure is raised)."""
    for result in predict_items(predictor, list(pairs), decode_pair, batch_size=batch_size,
                                num_workers=num_workers):
        result.raise_error()
        yield result.item, to_uint8(result.alpha())
