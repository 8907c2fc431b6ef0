"""Python API for prediction: ``Predictor(weights, model=...)`` loads a model once and predicts.

>>> p = Predictor("u2net.pth", model="u2net")           # doctest: +SKIP
>>> mask = p.predict("photo.jpg")                        # uint8 (H, W), as salseg-predict saves it
>>> alpha = p.predict_alpha(pil_image)                   # float32 (H, W) in [0, 1]
>>> rgba = p.cutout(numpy_image, decontaminate=True)     # uint8 (H, W, 4)

Weights: a project ``.ckpt``, an official ``.pth``, a ``.safetensors`` file, an ``.onnx`` file
(imported into PyTorch, or run by onnxruntime with ``backend="onnx"``), a state dict, an
``nn.Module``, ``None`` (random weights, for tests) or a model-zoo name (``"u2netp"``,
``"isnet-general-use"``; see docs/zoo.md), whose architecture, output channels and preprocessing
come from the catalogue.  Without ``model`` the architecture is guessed from the weights.
Class-map checkpoints (``u2net_cloth_seg``): :meth:`Predictor.predict_classes` returns the
argmax class map; ``predict``/``finish`` encode class ``c`` as the alpha ``(c + 0.5) / 255`` so
that the saved 8-bit mask holds the class indices.  Pre- and post-processing follow the official inference scripts
(see :mod:`salseg.models.preprocess` and :mod:`salseg.predict.postprocess`).
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from salseg.models.card import Preprocessing, cards, get_card
from salseg.models.preprocess import Preprocessor
from salseg.models.registry import canonical_name, create_model
from salseg.models.restore import restore_alpha, to_uint8
from salseg.models.weights import WeightsError, guess_architecture
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
from salseg.predict.images import ImageInput, decode_image
from salseg.predict.postprocess import RefineOptions, refine
from salseg.weights import resolve as resolve_weights_file
from salseg.weights.load import checkpoint_meta, load_weights, read_state_dict

log = logging.getLogger(__name__)


def onnx_model_name(path: str | Path) -> str | None:
    """The architecture recorded by ``salseg-export`` in an ONNX file's metadata, if any."""
    from salseg.export.onnx import read_metadata

    return read_metadata(path)[0]


def weights_preprocessing(weights: object, name: str) -> Preprocessing:
    """The preprocessing ``weights`` were trained with: the card's, with what the file records.

    A project ``.ckpt`` records its training input size; an ``.onnx`` file from ``salseg-export``
    records its whole :class:`Preprocessing`.  Anything else gets the card's defaults.
    """
    card = get_card(name)
    if isinstance(weights, (str, Path)):
        path = Path(weights)
        if path.suffix.lower() == ".onnx" and path.is_file():
            from salseg.export.onnx import read_metadata

            recorded_name, pre = read_metadata(path)
            if pre is not None and recorded_name == card.name:
                return pre
            return card.preprocessing
        meta = checkpoint_meta(path)
        if meta.get("input_size"):
            return replace(card.preprocessing, input_size=tuple(meta["input_size"]))
    return card.preprocessing


def _name_from(state_dict: Mapping[str, torch.Tensor], model: str | None, source: object) -> str:
    if model is not None:
        return canonical_name(model)
    guess = guess_architecture(state_dict)
    if guess is None:
        names = "|".join(c.name for c in cards() if c.can_predict)
        raise WeightsError(f"{source}: cannot tell the architecture from the weights; "
                           f"pass model=<{names}> (salseg-models cards)")
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
        log.debug("no weights given: %s runs with random weights", model)  # asked for: no warning
        return create_model(model), canonical_name(model)
    if isinstance(weights, Mapping):
        name = _name_from(weights, model, "state dict")
        net = create_model(name)
        net.load_state_dict(dict(weights), strict=True)
        return net, name
    meta = checkpoint_meta(weights)
    model = model or meta.get("name")
    kwargs = {"out_ch": int(meta["out_ch"])} if meta.get("out_ch", 1) != 1 else {}
    path = Path(weights)
    state_dict = read_state_dict(path)
    name = _name_from(state_dict, model, path)
    net = create_model(name, **kwargs)
    try:
        net.load_state_dict(state_dict, strict=True)
    except RuntimeError:
        load_weights(net, path, name=name)  # raises WeightsError with a readable summary
    return net, name


def _zoo_onnx(weights: object) -> object:
    """For ``backend="onnx"``: a model-zoo name -> its downloaded ``.onnx`` source (if it has
    one; the file is run as published, no conversion)."""
    from salseg.zoo.resolve import zoo_entry_for

    entry = zoo_entry_for(weights)
    if entry is None:
        return weights
    onnx_only = replace(entry, sources=tuple(s for s in entry.sources if s.format == "onnx"))
    if not onnx_only.sources:
        raise ValueError(f"{entry.name}: no ONNX source in the catalogue (use backend='torch')")
    from salseg.zoo.cache import ZooError, fetch

    try:
        return fetch(onnx_only)[0]
    except ZooError as exc:
        raise WeightsError(str(exc)) from exc


def _as_decoded(item: tuple[np.ndarray, bool]) -> tuple[np.ndarray, bool]:
    return item


class Predictor:
    """Load a model once; predict masks for PIL / NumPy / tensor images or file paths."""

    def __init__(self, weights: str | Path | Mapping | nn.Module | None = None,
                 model: str | None = None, *, device: str | torch.device = "auto",
                 precision: str = "fp32", backend: str = "torch",
                 input_size: int | Sequence[int] | None = None, resize: str = "official",
                 normalization: str | None = None,
                 refine_options: RefineOptions | None = None,
                 channels_last: bool | None = None, onnx_threads: int | None = None) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.device = resolve_device(device)
        resolved = None
        auto = backend == "auto"
        if auto:  # the faster installed back-end for this device (docs/performance.md)
            backend = auto_backend(self.device, precision)
            is_onnx_file = isinstance(weights, (str, Path)) and \
                Path(weights).suffix.lower() == ".onnx"
        self.backend = backend
        self.refine_options = refine_options or RefineOptions()
        if backend == "onnx" and not (auto and not is_onnx_file):
            from salseg.zoo.resolve import zoo_entry_for

            meta = checkpoint_meta(weights) if zoo_entry_for(weights) is not None else {}
            if meta.get("prediction") == "argmax":
                raise ValueError(f"{weights}: class-map models run with backend='torch' only")
            weights = _zoo_onnx(weights)
            if not isinstance(weights, (str, Path)) or Path(weights).suffix.lower() != ".onnx":
                raise ValueError("backend='onnx' needs weights given as a path to an .onnx file")
            path = Path(weights)
            if not path.is_file():
                raise WeightsError(f"{path}: ONNX file not found")
            recorded = onnx_model_name(path)  # also refuses an empty or corrupt file by name
            name = canonical_name(model) if model else (meta.get("name") or recorded)
            if name is None:
                from salseg.export.onnx import onnx_to_state_dict

                name = _name_from(onnx_to_state_dict(path), None, path)
            if precision != "fp32":
                raise ValueError("the onnx backend runs the graph's own precision; use fp32")
            self.runner: TorchRunner | OnnxRunner = OnnxRunner(path, self.device, onnx_threads)
        elif isinstance(weights, (str, Path)):  # one read of the file (salseg.weights)
            resolved = resolve_weights_file(weights, model)
            meta, name, net = resolved.metadata, resolved.name, resolved.build()
            if backend == "onnx":  # auto on the CPU with non-ONNX weights: export, then run
                self.runner = exported_onnx_runner(net, name, self.device, onnx_threads)
            else:
                self.runner = TorchRunner(net, name, self.device, precision, channels_last)
        else:
            meta = {}
            net, name = build_model(weights, model)
            if backend == "onnx":  # auto on the CPU with non-ONNX weights: export, then run
                self.runner = exported_onnx_runner(net, name, self.device, onnx_threads)
            else:
                self.runner = TorchRunner(net, name, self.device, precision, channels_last)
        self.name = name
        self.meta = meta
        self.classes: list[str] = list(self.meta.get("classes") or [])
        self.card = get_card(name)
        if not self.card.can_predict:
            raise ValueError(f"{name} takes masks, not images: it cannot predict")
        # the preprocessing the weights were trained with (checkpoint / ONNX metadata / zoo)
        trained = (resolved.preprocessing if resolved is not None and resolved.name == name
                   else weights_preprocessing(weights, name))
        self.preprocessor = Preprocessor(trained, input_size, resize,
                                         overrides=self.meta.get("preprocessing"))
        if normalization is None:
            normalization = self.preprocessor.preprocessing.normalization
        self.normalization = normalization
        self.preprocessing = replace(self.preprocessor.preprocessing, normalization=normalization)
        multiple = self.card.size_multiple
        if any(s % multiple for s in self.preprocessing.input_size):
            raise ValueError(f"{name} needs an input size whose height and width are multiples "
                             f"of {multiple}, got {self.preprocessing.input_size}")

    @property
    def model(self) -> nn.Module | None:
        """The PyTorch module (``None`` for the onnx backend)."""
        return getattr(self.runner, "model", None)

    # -- the steps of the shared batched loop (salseg.predict.loop) and of salseg-serve -----
    def prepare(self, image: np.ndarray, gray: bool = False) -> torch.Tensor:
        """Normalised model input ``(3, h, w)`` for a uint8 RGB image (``gray``: decoded from
        one channel, normalised by the preprocessing's grayscale rule)."""
        return self.preprocessor(image, gray)

    def infer(self, batch: torch.Tensor) -> torch.Tensor:
        """Probabilities ``(B, 1, h, w)`` for a normalised batch."""
        return self.runner(batch)

    @property
    def is_classifier(self) -> bool:
        """Whether the prediction is an argmax class map (e.g. ``u2net_cloth_seg``)."""
        return self.meta.get("prediction") == "argmax"

    def class_map(self, prob: torch.Tensor, original_size: tuple[int, int]) -> np.ndarray:
        """Per-class scores ``(C, h, w)`` -> uint8 class map ``(H, W)``: bilinear up-sampling of
        the scores to the original size, then argmax over the classes."""
        prob = prob.float().reshape(-1, *prob.shape[-2:])
        if tuple(prob.shape[-2:]) != tuple(original_size):
            prob = torch.nn.functional.interpolate(prob[None], size=tuple(original_size),
                                                   mode="bilinear", align_corners=False)[0]
        return prob.argmax(dim=0).to(torch.uint8).cpu().numpy()

    def finish(self, prob: torch.Tensor, original_size: tuple[int, int]) -> np.ndarray:
        """Probability at model resolution -> refined float32 alpha at the original size.

        Class-map models return ``(class + 0.5) / 255`` (the 8-bit mask holds the class).
        """
        if self.is_classifier:
            labels = self.class_map(prob, original_size)
            return (labels.astype(np.float32) + np.float32(0.5)) / np.float32(255)
        alpha = restore_alpha(prob, original_size, self.preprocessing, self.normalization)
        return refine(alpha, self.refine_options)

    def predict_classes(self, image: ImageInput) -> np.ndarray:
        """The uint8 class map ``(H, W)`` of a class-map model (indices into ``classes``)."""
        if not self.is_classifier:
            raise ValueError(f"{self.name}: not a class-map model (use predict())")
        rgb, gray = decode_image(image)
        prob = self.infer(self.prepare(rgb, gray)[None])[0]
        return self.class_map(prob, rgb.shape[:2])

    # -- convenience API ----------------------------------------------------------------------
    def predict_alpha_batch(self, images: Sequence[ImageInput]) -> list[np.ndarray]:
        """Float32 alphas ``(H, W)`` in [0, 1] for several images (one forward pass)."""
        return self._alphas([decode_image(im) for im in images])

    def _alphas(self, decoded: Sequence[tuple[np.ndarray, bool]]) -> list[np.ndarray]:
        from salseg.predict.loop import predict_items

        alphas = []
        for result in predict_items(self, decoded, _as_decoded, batch_size=max(1, len(decoded))):
            result.raise_error()
            alphas.append(result.alpha())
        return alphas

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
        rgb, gray = decode_image(image)
        alpha = self._alphas([(rgb, gray)])[0]
        fg = estimate_foreground(rgb, alpha) if decontaminate else None
        return make_cutout(rgb, alpha, fg)
