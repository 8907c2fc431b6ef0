"""Upload decoding and PNG rendering for ``salseg-serve``, on the pixel path of ``salseg-predict``.

* An upload is spooled to a private temporary file and decoded by
  :func:`salseg.data.io.read_image`, the decoder of ``salseg-predict`` (EXIF orientation, alpha
  dropped, 16-bit scaling, ...), so the same bytes give the same pixels.  Images above the pixel
  limit are refused from their header alone, before decoding.
* The steps that depend on the image's size (:func:`decode_step`, :func:`finish_step`) take a
  :func:`pixel_pipeline`, the predictor without its model, so that they can run in a worker
  process (:mod:`salseg.serve.workers`); :func:`peek_size` reads the size from the header for
  admission, before any decoding.
* The probability map is finished by the model's :meth:`Predictor.finish` with the request's
  mask options, and every output is built by the functions ``salseg-predict`` writes with
  (:mod:`salseg.predict.compose`, :func:`~salseg.predict.io.encode_png`), so a response is
  byte-identical to the file ``salseg-predict`` writes for the same options.
"""
from __future__ import annotations

import copy
import io
import os
import tempfile
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from salseg.data.errors import DataError
from salseg.data.io import image_size, load_image
from salseg.predict.compose import decontaminate, render_output
from salseg.predict.inputs import OUTPUT_KINDS
from salseg.predict.io import encode_png
from salseg.predict.postprocess import RefineOptions, check_refine_bounds
from salseg.predict.predictor import Predictor


class UploadError(Exception):
    """A request that cannot be served; ``status`` is the HTTP status code to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def decode_upload(data: bytes, filename: str, max_pixels: int | None,
                  tmp_dir: str | None = None) -> tuple[np.ndarray, bool]:
    """uint8 RGB ``(H, W, 3)`` of an uploaded file and whether it was decoded from one colour
    channel (the decoder's ``gray`` flag, when it has one; grayscale inputs may be normalised
    differently); :class:`UploadError` (413/415) if unusable."""
    label = filename or "upload"
    if not data:
        raise UploadError(415, f"{label}: file is empty (0 bytes)")
    fd, path = tempfile.mkstemp(prefix=".salseg-upload-", dir=tmp_dir)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        try:
            if max_pixels:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                    h, w = image_size(path)
                if h * w > max_pixels:
                    raise UploadError(413, f"{label}: image is {w}x{h} = {h * w / 1e6:.1f} MP, "
                                           f"above the server's limit of {max_pixels / 1e6:.1f} MP")
            loaded = load_image(path)
            return loaded.array, bool(getattr(loaded, "gray", False))
        except DataError as exc:
            status = 413 if "too large" in exc.problem else 415
            raise UploadError(status, f"{label}: {exc.problem}") from None
        except Image.DecompressionBombError as exc:
            raise UploadError(413, f"{label}: image too large to decode safely ({exc})") from None
    finally:
        os.unlink(path)


@dataclass(frozen=True)
class RenderOptions:
    """What one request asks for: the output kind and the options of ``salseg-predict``."""

    kind: str = "cutout"
    normalization: str | None = None  # None: the model card's, as salseg-predict (BiRefNet: sigmoid)
    refine: RefineOptions = RefineOptions()
    decontaminate: bool = False
    bg_color: str = "white"

    def __post_init__(self) -> None:
        if self.kind not in OUTPUT_KINDS:
            raise ValueError(f"output must be one of {', '.join(OUTPUT_KINDS)}, got {self.kind!r}")


def prepare(predictor: Predictor, image: np.ndarray, gray: bool) -> torch.Tensor:
    """The model input, as the batch loop of ``salseg-predict`` prepares it."""
    return predictor.prepare(image, gray) if gray else predictor.prepare(image)


def finish(predictor: Predictor, prob: torch.Tensor, size: tuple[int, int],
           options: RenderOptions) -> np.ndarray:
    """The refined float alpha, by ``predictor.finish`` with the request's mask options (a
    shallow copy of the predictor carries them; the model itself is shared)."""
    normalization = options.normalization or predictor.normalization
    if (normalization, options.refine) != (predictor.normalization, predictor.refine_options):
        predictor = copy.copy(predictor)
        predictor.normalization = normalization
        predictor.refine_options = options.refine
    return predictor.finish(prob, size)


def render(image: np.ndarray, alpha: np.ndarray, options: RenderOptions) -> bytes:
    """PNG bytes of one output, built exactly as ``salseg-predict`` builds the file."""
    fg = decontaminate(image, alpha) if options.decontaminate and options.kind != "mask" else None
    return encode_png(render_output(options.kind, image, alpha, fg, options.bg_color))


def pixel_pipeline(predictor: Predictor) -> Predictor:
    """A copy of ``predictor`` without its model (``prepare`` and ``finish`` work; ``infer``
    does not): small to pickle into a worker process."""
    pipeline = copy.copy(predictor)
    pipeline.runner = None
    return pipeline


def peek_size(data: bytes) -> tuple[int, int] | None:
    """``(H, W)`` from the image header (no decoding); ``None`` if Pillow cannot tell."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                return img.height, img.width
    except Image.DecompressionBombError:
        raise UploadError(413, "image too large to decode safely") from None
    except Exception:  # noqa: BLE001 - the decoder names the problem later
        return None


def decode_step(pipeline: Predictor, data: bytes, filename: str, max_pixels: int | None,
                options: RenderOptions) -> tuple[np.ndarray, torch.Tensor]:
    """Decode an upload, check the options against its size (422) and prepare the model input:
    ``(image, x)``."""
    image, gray = decode_upload(data, filename, max_pixels)
    try:
        check_refine_bounds(options.refine, *image.shape[:2])
    except ValueError as exc:
        raise UploadError(422, f"{filename}: {exc}") from None
    return image, prepare(pipeline, image, gray)


def finish_step(pipeline: Predictor, prob: torch.Tensor, image: np.ndarray,
                options: RenderOptions) -> bytes:
    """The response PNG of one request from its probability map."""
    return render(image, finish(pipeline, prob, image.shape[:2], options), options)
