"""Model cards: one record per architecture that training, evaluation, prediction and export
dispatch through, plus the registry of cards.

A :class:`ModelCard` says what an architecture *is* for the rest of salseg: how to build it, its
aliases, its :class:`Preprocessing` (input size, normalisation, grayscale rule, the resize of the
official inference, how the prediction is restored to the image size), how to read its raw
``forward`` output (:class:`ModelOutputs`: side logits, features, prediction logits), the official
output structure (``to_official``), its encoder parameter prefixes (for freezing), its ONNX output
names and rembg session, its training task and default augmentation recipe, whether it takes masks
instead of images (the IS-Net GT encoder) and which card trains its GT encoder (IS-Net phase 1).

The cards of the built-in architectures live beside their networks (``salseg/models/u2net.py``,
``salseg/models/isnet.py``) and are registered on first use of the registry; a new architecture
is one module calling :func:`register_card` (see docs/architecture.md, "Adding a model");
a module outside the package is imported by the registry when ``SALSEG_MODEL_MODULES`` names it.

Checkpoints, zoo entries and ONNX metadata override a card's preprocessing with
``dataclasses.replace(card.preprocessing, ...)``: prediction, preprocessing and export take a
:class:`Preprocessing` object, not a model name.
"""
from __future__ import annotations

import importlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

SCALES = ("max", "255")
GRAY_RULES = ("official", "per_channel")
RESIZES = ("skimage", "torch_trunc", "antialias", "cv2_linear", "pil_bilinear")
RESTORES = ("pil_uint8", "float", "float_align_corners", "pil_bicubic")
NORMALIZATIONS = ("minmax", "sigmoid")


@dataclass(frozen=True)
class Preprocessing:
    """Everything needed to turn a decoded uint8 image into the model input and back.

    * ``input_size``: ``(height, width)`` of the model input;
    * ``scale``: ``"max"`` divides every image by its own maximum (official U2-Net
      ``ToTensorLab(flag=0)``; an all-zero image stays zero), ``"255"`` divides by 255;
    * ``mean`` / ``std``: per-channel statistics applied after scaling;
    * ``gray``: how a single-channel image is normalised. ``"official"`` (official U2-Net):
      all three channels use the **first** channel's statistics, ``(x - mean[0]) / std[0]``;
      ``"per_channel"``: the gray image is replicated and each channel uses its own statistics
      (the official DIS loader; a named deviation for U2-Net);
    * ``resize``: the inference resize. ``"skimage"``: scikit-image bilinear in float64 without
      anti-aliasing (official U2-Net ``u2net_test.py``); ``"torch_trunc"``: ``F.interpolate``
      bilinear then uint8 truncation (official IS-Net ``Inference.py``); ``"antialias"``: torch
      bilinear with anti-aliasing and no truncation (a named deviation); ``"cv2_linear"``:
      ``cv2.resize(INTER_LINEAR)`` of the uint8 image, no anti-aliasing (official BiRefNet
      ``inference.py``); ``"pil_bilinear"``: PIL bilinear (anti-aliased) of the uint8 image
      (the BiRefNet model-card snippet);
    * ``restore``: how the prediction goes back to the image size. ``"pil_uint8"`` (U2-Net):
      min-max at model resolution, 8-bit truncation, PIL bilinear; ``"float"`` (IS-Net):
      bilinear in float, then min-max; ``"float_align_corners"`` (BiRefNet ``inference.py``):
      bilinear with ``align_corners=True`` in float; ``"pil_bicubic"`` (BiRefNet model card):
      8-bit truncation at model resolution, then PIL bicubic;
    * ``normalization``: of the output map, ``"minmax"`` (official) or ``"sigmoid"``;
    * ``in_channels``: channels of the model input (1 for the GT encoder, which takes masks).
    """

    input_size: tuple[int, int]
    scale: str
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    gray: str = "official"
    resize: str = "skimage"
    restore: str = "pil_uint8"
    normalization: str = "minmax"
    in_channels: int = 3

    def __post_init__(self) -> None:
        for key, allowed in (("scale", SCALES), ("gray", GRAY_RULES), ("resize", RESIZES),
                             ("restore", RESTORES), ("normalization", NORMALIZATIONS)):
            if getattr(self, key) not in allowed:
                raise ValueError(f"Preprocessing.{key} must be one of {allowed}, "
                                 f"got {getattr(self, key)!r}")
        size = tuple(int(s) for s in self.input_size)
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"Preprocessing.input_size must be (h, w) > 0, got {self.input_size}")
        object.__setattr__(self, "input_size", size)
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))

    def stats(self, channels: int, gray: bool = False) -> tuple[tuple[float, ...],
                                                                tuple[float, ...]]:
        """``(mean, std)`` for ``channels`` channels; a gray image follows the ``gray`` rule."""
        mean, std = self.mean, self.std
        if gray and self.gray == "official":
            mean, std = mean[:1], std[:1]
        if len(mean) < channels:
            mean = mean[:1] * channels
        if len(std) < channels:
            std = std[:1] * channels
        return mean[:channels], std[:channels]

    def normalize(self, image: torch.Tensor, gray: bool | Sequence[bool] = False) -> torch.Tensor:
        """Normalise a float image batch ``(B, C, H, W)`` holding values in [0, 255].

        ``gray`` (one flag, or one per image) marks images decoded from a single channel.
        Arithmetic in the batch's dtype when floating (float64 keeps the official U2-Net
        arithmetic), else float32.
        """
        if image.ndim != 4:
            raise ValueError(f"expected a (B, C, H, W) batch, got shape {tuple(image.shape)}")
        x = image if image.is_floating_point() else image.float()
        if self.scale == "max":
            peak = x.amax(dim=(1, 2, 3), keepdim=True)
            x = torch.where(peak > 0, x / peak.clamp_min(1e-12), x)
        else:
            x = x / 255.0
        flags = [bool(gray)] * x.shape[0] if isinstance(gray, bool) else [bool(g) for g in gray]
        if len(flags) != x.shape[0]:
            raise ValueError(f"{len(flags)} gray flags for a batch of {x.shape[0]}")
        c = x.shape[1]
        rows = [self.stats(c, g) for g in flags]
        mean = torch.tensor([m for m, _ in rows], dtype=x.dtype, device=x.device)[..., None, None]
        std = torch.tensor([s for _, s in rows], dtype=x.dtype, device=x.device)[..., None, None]
        return (x - mean) / std

    # -- ONNX metadata -------------------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Preprocessing:
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown preprocessing field(s) {sorted(unknown)}")
        for key in ("input_size", "mean", "std"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)


@dataclass(frozen=True)
class ModelOutputs:
    """A forward's output read through its card.

    ``sides`` (every supervised logit map; U2-Net: fused first), ``features`` (feature maps
    for feature synchronisation, may be empty), ``prediction`` (the logit map that is the
    model's prediction) and ``aux``: named auxiliary outputs of the train-mode forward, each a
    list of tensors (e.g. BiRefNet's gradient-branch predictions and labels, class logits);
    empty for a network without any, and in eval mode for one that returns them only in
    training.  ``names`` gives the name of every tensor per group (``"sides"``,
    ``"features"``, and each ``aux`` key); :meth:`ModelCard.read` fills it from the card, and
    :meth:`group` refuses a group whose tensors and names do not pair up (an 8-output network
    with 7 names must not lose a loss term in silence).
    """

    sides: list[torch.Tensor]
    features: list[torch.Tensor]
    prediction: torch.Tensor
    aux: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    names: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def tensors(self, group: str) -> list[torch.Tensor]:
        """The tensors of ``group``: ``sides``, ``features``, ``prediction`` or an ``aux`` key."""
        if group in ("sides", "features"):
            return list(getattr(self, group))
        if group == "prediction":
            return [self.prediction]
        if group in self.aux:
            value = self.aux[group]
            return [value] if isinstance(value, torch.Tensor) else list(value)
        known = ["sides", "features", "prediction", *self.aux]
        raise ValueError(f"the model has no output group {group!r}; it has {known}")

    def group(self, group: str) -> list[tuple[str, torch.Tensor]]:
        """``(name, tensor)`` pairs of ``group``; names default to ``<group><i>`` (from 1)."""
        tensors = self.tensors(group)
        names = ("prediction",) if group == "prediction" else self.names.get(group)
        if names is None:
            names = tuple(f"{group}{i}" for i in range(1, len(tensors) + 1))
        if len(names) != len(tensors):
            raise ValueError(f"{len(tensors)} {group} outputs but {len(names)} names "
                             f"{list(names)}: name every output on the model card")
        return list(zip(names, tensors))


@dataclass(frozen=True)
class ModelCard:
    """What an architecture is for the rest of salseg (see the module docstring)."""

    name: str
    build: Callable[..., nn.Module]
    preprocessing: Preprocessing
    outputs: Callable[[Any], ModelOutputs]
    to_official: Callable[[Any], Any]
    side_names: tuple[str, ...]  # ONNX names of the side probabilities, prediction first
    feature_names: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    encoder_prefixes: tuple[str, ...] = ()
    rembg_session: str | None = None
    aux_names: dict = field(default_factory=dict)  # aux output key -> names of its tensors
    task: str = "salseg.tasks.TrainingTask"
    default_aug: str = "u2net_paper"
    # the default training loss: term name -> term config (salseg.losses.terms.LossTerm)
    loss: dict = field(default_factory=lambda: {"bce": {"criterion": "bce", "outputs": "sides"}})
    # parameters of the backbone (names start with these) and their learning-rate multiplier
    backbone_prefixes: tuple[str, ...] = ()
    backbone_lr_mult: float = 1.0
    takes_masks: bool = False
    gt_encoder: str | None = None  # card trained first as this one's GT encoder (IS-Net)
    official_manifest: str | None = None  # name of its official parity fixture, if any
    size_multiple: int = 1  # input height and width must be multiples of this (BiRefNet: 32)
    onnx_opset: int | None = None  # lowest ONNX opset the export needs (BiRefNet: 19)
    onnx_dynamic_size: bool = True  # False: only the batch axis of the export is dynamic
    notes: dict = field(default_factory=dict)

    def read(self, raw: Any) -> ModelOutputs:
        """``outputs(raw)`` with every group named from the card (``side_names``,
        ``feature_names``, ``aux_names``)."""
        out = self.outputs(raw)
        names = {"sides": tuple(self.side_names), "features": tuple(self.feature_names),
                 **{k: tuple(v) for k, v in self.aux_names.items()}, **out.names}
        return replace(out, names=names)

    def official_flat(self, raw: Any) -> list[torch.Tensor]:
        """The official outputs as one flat list: side probabilities, then features."""
        out = self.outputs(raw)
        return [*(torch.sigmoid(s) for s in out.sides), *out.features]

    def onnx_output_names(self, include_features: bool = False) -> list[str]:
        return list(self.side_names) + (list(self.feature_names) if include_features else [])

    def exported(self, raw: Any, include_features: bool = False) -> tuple[torch.Tensor, ...]:
        """The ONNX outputs: side probabilities (prediction first), then features if asked."""
        out = self.outputs(raw)
        sides = tuple(torch.sigmoid(s) for s in out.sides)
        return sides + (tuple(out.features) if include_features else ())

    @property
    def can_predict(self) -> bool:
        return not self.takes_masks


#: the modules that register the built-in cards (each network module registers its own cards;
#: named, not imported, here: the registry sits below the networks)
BUILTIN_CARD_MODULES = ("salseg.models.birefnet", "salseg.models.isnet", "salseg.models.u2net")
#: environment variable naming modules (outside salseg) that register more cards
MODEL_MODULES_ENV = "SALSEG_MODEL_MODULES"

_CARDS: dict[str, ModelCard] = {}
_ALIASES: dict[str, str] = {}
_BUILTIN_LOADED = False


def _load_builtin() -> None:
    global _BUILTIN_LOADED
    if not _BUILTIN_LOADED:
        _BUILTIN_LOADED = True
        # the built-in cards, then cards outside the package (SALSEG_MODEL_MODULES=pkg.mod,...)
        extra = [m.strip() for m in os.environ.get(MODEL_MODULES_ENV, "").split(",")]
        for module in (*BUILTIN_CARD_MODULES, *filter(None, extra)):
            importlib.import_module(module)


def register_card(card: ModelCard, replace: bool = False) -> ModelCard:
    """Add ``card`` to the registry (its name and aliases, case-insensitive)."""
    keys = [card.name.lower(), *(a.lower() for a in card.aliases)]
    if not replace:
        taken = [k for k in keys if (k in _CARDS or k in _ALIASES)
                 and _ALIASES.get(k, k) != card.name.lower()]
        if taken or card.name.lower() in _CARDS:
            raise ValueError(f"model card name(s) already registered: {taken or [card.name]}")
    _CARDS[card.name.lower()] = card
    for alias in card.aliases:
        _ALIASES[alias.lower()] = card.name.lower()
    return card


def unregister_card(name: str) -> None:
    """Remove a card and its aliases (tests registering toy cards clean up with this)."""
    card = _CARDS.pop(name.lower(), None)
    if card is not None:
        for alias in card.aliases:
            _ALIASES.pop(alias.lower(), None)


def get_card(name: str | ModelCard) -> ModelCard:
    """The card of ``name`` or one of its aliases; a clear error lists the known names."""
    if isinstance(name, ModelCard):
        return name
    _load_builtin()
    key = str(name).lower()
    key = _ALIASES.get(key, key)
    if key not in _CARDS:
        raise ValueError(f"unknown model {name!r}; expected one of {sorted(_CARDS)}")
    return _CARDS[key]


def cards() -> list[ModelCard]:
    """Every registered card, in registration order."""
    _load_builtin()
    return list(_CARDS.values())


__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "ModelCard", "ModelOutputs", "Preprocessing", "cards",
    "get_card", "register_card", "unregister_card",
]
