"""Python API for prediction: ``Predictor(weights, model=...)`` loads a model once and predicts.

>>> p = Predictor("u2net.pth", model="u2net")           # doctest: +SKIP
>>> mask = p.predict("photo.jpg")                        # uint8 (H, W), as salseg-predict saves it
>>> alpha = p.predict_alpha(pil_image)                   # float32 (H, W) in [0, 1]
>>> rgba = p.cutout(numpy_image, decontaminate=True)     # uint8 (H, W, 4)

Weights: a project ``.ckpt``, an official ``.pth``, a ``.safetensors`` file, an ``.onnx`` file
(imported into PyTorch, or run by onnxruntime with ``backend="onnx"``), a state dict, an
``nn.Module`` or ``None`` (random weights, for tests).  Without ``model`` the architecture is
guessed from the weights.  Pre- and post-processing follow the official inference scripts
(see :mod:`salseg.predict.preprocess` and :mod:`salseg.predict.postprocess`).
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from salseg.models.registry import canonical_name, create_model
from salseg.models.weights import (
    WeightsError,
    checkpoint_meta,
    guess_architecture,
    load_weights,
    read_state_dict,
)
from salseg.predict.backends import (
    BACKENDS,
    OnnxRunner,
    TorchRunner,
    auto_backend,
    exported_onnx_runner,
    resolve_device,
)
from salseg.predict.compose import cutout as make_cutout
from salseg.predict.compose import decontaminate as estimate_foreground
from salseg.predict.images import ImageInput, to_rgb_uint8
from salseg.predict.postprocess import RefineOptions, refine, restore_alpha, to_uint8
from salseg.predict.preprocess import Preprocessor

log = logging.getLogger(__name__)


def onnx_model_name(path: str | Path) -> str | None:
    """The architecture recorded by ``salseg-export`` in an ONNX file's metadata, if any."""
    from salseg.export.onnx_import import load_onnx

    proto = load_onnx(path, load_external_data=False)  # WeightsError naming a bad file
    for prop in proto.metadata_props:
        if prop.key == "salseg.model":
            return canonical_name(prop.value)
    return None


def _name_from(state_dict: Mapping[str, torch.Tensor], model: str | None, source: object) -> str:
    if model is not None:
        return canonical_name(model)
    guess = guess_architecture(state_dict)
    if guess is None:
        raise WeightsError(f"{source}: cannot tell the architecture from the weights; "
                           "pass model=<u2net|u2netp|isnet>")
    return guess


def build_model(weights: str | Path | Mapping | nn.Module | None, model: str | None
                ) -> tuple[nn.Module, str]:
    """A model with ``weights`` loaded strictly, and its registry name."""
    if isinstance(weights, nn.Module):
        if model is None:
            name = _name_from(weights.state_dict(), None, type(weights).__name__)
        else:
            name = canonical_name(model)
        return weights, name
    if weights is None:
        if model is None:
            raise ValueError("without weights, model=<name> is required (random weights)")
        log.warning("no weights given: %s runs with random weights", model)
        return create_model(model), canonical_name(model)
    if isinstance(weights, Mapping):
        name = _name_from(weights, model, "state dict")
        net = create_model(name)
        net.load_state_dict(dict(weights), strict=True)
        return net, name
    path = Path(weights)
    state_dict = read_state_dict(path)
    name = _name_from(state_dict, model, path)
    net = create_model(name)
    try:
        net.load_state_dict(state_dict, strict=True)
    except RuntimeError:
        load_weights(net, path, name=name)  # raises WeightsError with a readable summary
    return net, name


class Predictor:
    """Load a model once; predict masks for PIL / NumPy / tensor images or file paths."""

    def __init__(self, weights: str | Path | Mapping | nn.Module | None = None,
                 model: str | None = None, *, device: str | torch.device = "auto",
                 precision: str = "fp32", backend: str = "torch",
                 input_size: int | Sequence[int] | None = None, resize: str = "official",
                 normalization: str = "minmax", refine_options: RefineOptions | None = None,
                 channels_last: bool | None = None, onnx_threads: int | None = None) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.device = resolve_device(device)
        auto = backend == "auto"
        if auto:  # the faster installed back-end for this device (docs/performance.md)
            backend = auto_backend(self.device, precision)
            is_onnx_file = isinstance(weights, (str, Path)) and \
                Path(weights).suffix.lower() == ".onnx"
        self.backend = backend
        self.normalization = normalization
        self.refine_options = refine_options or RefineOptions()
        if backend == "onnx" and not (auto and not is_onnx_file):
            if not isinstance(weights, (str, Path)) or Path(weights).suffix.lower() != ".onnx":
                raise ValueError("backend='onnx' needs weights given as a path to an .onnx file")
            path = Path(weights)
            if not path.is_file():
                raise WeightsError(f"{path}: ONNX file not found")
            recorded = onnx_model_name(path)  # also refuses an empty or corrupt file by name
            name = canonical_name(model) if model else recorded
            if name is None:
                from salseg.export.onnx import onnx_to_state_dict

                name = _name_from(onnx_to_state_dict(path), None, path)
            if precision != "fp32":
                raise ValueError("the onnx backend runs the graph's own precision; use fp32")
            self.runner: TorchRunner | OnnxRunner = OnnxRunner(path, self.device, onnx_threads)
        else:
            meta = checkpoint_meta(weights) if isinstance(weights, (str, Path)) else {}
            model = model or meta.get("name")
            if input_size is None and meta.get("input_size"):
                input_size = meta["input_size"]  # the resolution the checkpoint was trained at
            net, name = build_model(weights, model)
            if backend == "onnx":  # auto on the CPU with non-ONNX weights: export, then run
                self.runner = exported_onnx_runner(net, name, self.device, onnx_threads)
            else:
                self.runner = TorchRunner(net, name, self.device, precision, channels_last)
        self.name = name
        self.preprocessor = Preprocessor(name, input_size, resize)

    @property
    def model(self) -> nn.Module | None:
        """The PyTorch module (``None`` for the onnx backend)."""
        return getattr(self.runner, "model", None)

    # -- the steps, also used by the batch loop of salseg-predict ---------------------------
    def prepare(self, image: np.ndarray) -> torch.Tensor:
        """Normalised model input ``(3, h, w)`` for a uint8 RGB image."""
        return self.preprocessor(image)

    def infer(self, batch: torch.Tensor) -> torch.Tensor:
        """Probabilities ``(B, 1, h, w)`` for a normalised batch."""
        return self.runner(batch)

    def finish(self, prob: torch.Tensor, original_size: tuple[int, int]) -> np.ndarray:
        """Probability at model resolution -> refined float32 alpha at the original size."""
        alpha = restore_alpha(prob, original_size, self.name, self.normalization)
        return refine(alpha, self.refine_options)

    # -- convenience API ----------------------------------------------------------------------
    def predict_alpha_batch(self, images: Sequence[ImageInput]) -> list[np.ndarray]:
        """Float32 alphas ``(H, W)`` in [0, 1] for several images (one forward pass)."""
        arrays = [to_rgb_uint8(im) for im in images]
        if not arrays:
            return []
        probs = self.infer(torch.stack([self.prepare(a) for a in arrays]))
        return [self.finish(p, a.shape[:2]) for p, a in zip(probs, arrays)]

    def predict_alpha(self, image: ImageInput) -> np.ndarray:
        """Float32 alpha ``(H, W)`` in [0, 1] at the image's size."""
        return self.predict_alpha_batch([image])[0]

    def predict(self, image: ImageInput) -> np.ndarray:
        """The uint8 mask ``(H, W)`` exactly as ``salseg-predict`` saves it."""
        return to_uint8(self.predict_alpha(image))

    def predict_batch(self, images: Sequence[ImageInput]) -> list[np.ndarray]:
        """uint8 masks for several images."""
        return [to_uint8(a) for a in self.predict_alpha_batch(images)]

    def cutout(self, image: ImageInput, decontaminate: bool = False) -> np.ndarray:
        """RGBA uint8 ``(H, W, 4)`` cut-out of the salient object."""
        rgb = to_rgb_uint8(image)
        alpha = self.predict_alpha(rgb)
        fg = estimate_foreground(rgb, alpha) if decontaminate else None
        return make_cutout(rgb, alpha, fg)
