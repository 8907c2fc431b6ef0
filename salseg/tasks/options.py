"""The training task's options as typed records (``salseg.tasks.TrainingTask``).

Configs stay flat: every ``model.<key>`` of ``configs/model/base/task.yaml`` and
``configs/model/*.yaml`` is one keyword of ``TrainingTask``.  :func:`task_options` is the one
function that sorts those flat keys into the records below (an unknown key is a
:class:`~salseg.training.checks.ConfigError` naming it and the known keys), and
:meth:`TaskOptions.flat` gives them back flat, as the checkpoint's ``hyper_parameters`` keep them.
Each record checks its own values when it is made.

* :class:`InitOptions`: where the weights start and what stays frozen (``init_weights``,
  ``backbone_weights``, ``freeze_bn``, ``freeze_encoder_epochs``).
* :class:`OptimizerOptions`: the optimizer and scheduler (Hydra ``_partial_`` factories),
  ``scheduler_interval`` and the backbone learning-rate multiplier ``backbone_lr_mult``.
* :class:`SpeedOptions`: per-step speed levers that leave the recipe unchanged
  (docs/performance.md): ``channels_last``, ``compile``, ``activation_checkpointing``,
  ``fused_optimizer``, ``progress_bar_loss``, ``fused_loss``, ``sync_dtype``.
* :class:`ImageLogging`: image grids in TensorBoard (``log_images_every_n_steps``,
  ``num_log_images``).
* :class:`GTEncoderOptions`: IS-Net feature synchronisation to a frozen GT encoder
  (``feature_sync``, ``gt_encoder_ckpt``, ``gt_encoder_bn``).
* :class:`TaskOptions`: the card (``name``), its network's keywords (``net_kwargs``), the
  resolution (``input_size``), the loss (``loss``, ``loss_form``), the validation convention
  and the stopping rule (``stop_max_f``), plus one of each record above.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from salseg.losses.bce import LOSS_FORMS
from salseg.losses.terms import DTYPES
from salseg.metrics.conventions import DEFAULT_CONVENTION
from salseg.training.checks import ConfigError

# ``model.init_weights=random``: start from random weights on purpose (a recipe that requires
# initial weights, ``experiment=finetune``, accepts it)
RANDOM_INIT = "random"
# ``model.compile``: false, true (torch.compile's default mode) or one of torch.compile's modes;
# ``reduce-overhead`` replays the forward and backward graphs as CUDA graphs (static shapes)
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
FREEZE_BN_MODES = ("auto", "true", "false")
BN_MODES = ("train", "eval")  # the frozen GT encoder's BatchNorms: batch or running statistics
SCHEDULER_INTERVALS = ("epoch", "step")


def compile_mode(value: bool | str) -> str | None:
    """The ``torch.compile`` mode for ``model.compile`` (``None``: its default, or no
    compilation for ``False``); an unknown mode is refused with the list of modes."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value in COMPILE_MODES:
        return None if value == "default" else value
    raise ValueError(f"model.compile must be true, false or one of {', '.join(COMPILE_MODES)}; "
                     f"got {value!r}")


@dataclass(frozen=True)
class InitOptions:
    """Initial weights and frozen parts.  ``freeze_bn``: ``auto`` (frozen BatchNorm statistics
    when the initial weights have folded ones), ``true`` or ``false``; ``backbone_weights``
    starts the card's backbone only and excludes ``init_weights`` (the whole network)."""

    init_weights: str | None = None
    backbone_weights: str | None = None
    freeze_bn: bool | str = "auto"
    freeze_encoder_epochs: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.freeze_bn, str) and self.freeze_bn.lower() not in FREEZE_BN_MODES:
            raise ValueError(f"model.freeze_bn must be auto, true or false, got {self.freeze_bn!r}")
        if (isinstance(self.freeze_encoder_epochs, bool) or not isinstance(self.freeze_encoder_epochs, int)
                or self.freeze_encoder_epochs < 0):
            raise ValueError("model.freeze_encoder_epochs must be a non-negative integer, got "
                             f"{self.freeze_encoder_epochs!r}")
        if self.backbone_weights and self.init_weights:
            raise ValueError("model.backbone_weights and model.init_weights are exclusive: "
                             "init_weights already holds the whole network")

    @property
    def weights(self) -> str | None:
        """The weights to load into the whole network (``None`` for ``random``)."""
        return None if self.init_weights == RANDOM_INIT else self.init_weights or None

    @property
    def freeze_bn_mode(self) -> str:
        """``auto``, ``true`` or ``false``."""
        value = self.freeze_bn
        return value.lower() if isinstance(value, str) else str(bool(value)).lower()


@dataclass(frozen=True)
class OptimizerOptions:
    """The optimizer and scheduler factories (default: the official ``Adam(1e-3)``, constant
    learning rate); ``backbone_lr_mult`` overrides the card's (``None``: the card's)."""

    optimizer: Callable[..., Any] | None = None
    scheduler: Callable[..., Any] | None = None
    scheduler_interval: str = "epoch"
    backbone_lr_mult: float | None = None

    def __post_init__(self) -> None:
        if self.scheduler_interval not in SCHEDULER_INTERVALS:
            raise ValueError(f"model.scheduler_interval must be one of {SCHEDULER_INTERVALS}, "
                             f"got {self.scheduler_interval!r}")
        mult = self.backbone_lr_mult
        if mult is not None and (isinstance(mult, bool) or not isinstance(mult, int | float)
                                 or mult < 0):
            raise ValueError(f"model.backbone_lr_mult must be a non-negative number, got {mult!r}")


@dataclass(frozen=True)
class SpeedOptions:
    """Speed levers (off by default; the recipe's numbers do not depend on them beyond float
    rounding).  ``fused_optimizer`` / ``progress_bar_loss``: ``None`` decides by device."""

    channels_last: bool = False
    compile: bool | str = False
    activation_checkpointing: bool = False
    fused_optimizer: bool | None = None
    progress_bar_loss: bool | None = None
    fused_loss: bool = False
    sync_dtype: str = "float32"

    def __post_init__(self) -> None:
        compile_mode(self.compile)
        if self.sync_dtype not in DTYPES:
            raise ValueError(f"model.sync_dtype must be one of {tuple(DTYPES)}, got "
                             f"{self.sync_dtype!r}")

    @property
    def compile_mode(self) -> str | None:
        return compile_mode(self.compile)


@dataclass(frozen=True)
class ImageLogging:
    """Input / GT / prediction grids every ``log_images_every_n_steps`` training steps (0: never)
    and for the first validation batch, ``num_log_images`` images each."""

    log_images_every_n_steps: int = 0
    num_log_images: int = 4

    def __post_init__(self) -> None:
        for key in ("log_images_every_n_steps", "num_log_images"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"model.{key} must be a non-negative integer, got {value!r}")


@dataclass(frozen=True)
class GTEncoderOptions:
    """IS-Net feature synchronisation: ``feature_sync=false`` drops the terms that target the
    GT encoder; ``gt_encoder_ckpt`` is the phase-1 checkpoint; ``gt_encoder_bn`` the mode of its
    BatchNorms (``train``: official, batch statistics; ``eval``: running statistics)."""

    feature_sync: bool = True
    gt_encoder_ckpt: str | None = None
    gt_encoder_bn: str = "train"

    def __post_init__(self) -> None:
        if self.gt_encoder_bn not in BN_MODES:
            raise ValueError(f"model.gt_encoder_bn must be one of {BN_MODES}, got "
                             f"{self.gt_encoder_bn!r}")


@dataclass(frozen=True)
class TaskOptions:
    """Everything the training task is made from (see the module docstring)."""

    name: str
    loss: Mapping[str, Any] | Sequence[Any] | None = None
    loss_form: str = "logits"
    val_convention: str = DEFAULT_CONVENTION
    stop_max_f: float | None = None
    input_size: Sequence[int] | None = None
    net_kwargs: Mapping[str, Any] | None = None
    init: InitOptions = field(default_factory=InitOptions)
    optim: OptimizerOptions = field(default_factory=OptimizerOptions)
    speed: SpeedOptions = field(default_factory=SpeedOptions)
    images: ImageLogging = field(default_factory=ImageLogging)
    gt_encoder: GTEncoderOptions = field(default_factory=GTEncoderOptions)

    def __post_init__(self) -> None:
        if self.loss_form not in LOSS_FORMS:
            raise ValueError(f"model.loss_form must be one of {LOSS_FORMS}, got {self.loss_form!r}")

    def flat(self, exclude: Sequence[str] = ()) -> dict[str, Any]:
        """The flat ``model.<key>`` mapping these options were made from (every key, defaults
        included), without the keys in ``exclude``."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in RECORDS:
                out.update({g.name: getattr(value, g.name) for g in fields(value)})
            else:
                out[f.name] = value
        return {k: v for k, v in out.items() if k not in exclude}


# record field of TaskOptions -> its type; every record's field names are flat config keys
RECORDS: dict[str, type] = {"init": InitOptions, "optim": OptimizerOptions, "speed": SpeedOptions,
                            "images": ImageLogging, "gt_encoder": GTEncoderOptions}
TOP_KEYS = tuple(f.name for f in fields(TaskOptions) if f.name not in RECORDS)


def known_keys() -> list[str]:
    """Every flat ``model.<key>`` of the training task, sorted."""
    keys = list(TOP_KEYS)
    for record in RECORDS.values():
        keys += [f.name for f in fields(record)]
    return sorted(keys)


def task_options(**flat: Any) -> TaskOptions:
    """The one place where flat ``model.<key>`` values are sorted into their records; an unknown
    key raises :class:`ConfigError` naming it and the known keys."""
    known = known_keys()
    unknown = sorted(set(flat) - set(known))
    if unknown:
        names = ", ".join(f"model.{k}" for k in unknown)
        raise ConfigError(f"{names}: not a key of the training task (salseg.tasks.TrainingTask); "
                          f"the known keys are {', '.join(known)}")
    records = {attr: cls(**{f.name: flat[f.name] for f in fields(cls) if f.name in flat})
               for attr, cls in RECORDS.items()}
    return TaskOptions(**{k: flat[k] for k in TOP_KEYS if k in flat}, **records)


__all__ = ["BN_MODES", "COMPILE_MODES", "RANDOM_INIT", "GTEncoderOptions", "ImageLogging",
           "InitOptions", "OptimizerOptions", "SpeedOptions", "TaskOptions", "compile_mode",
           "known_keys", "task_options"]
