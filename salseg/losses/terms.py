"""Training losses as a list of configured terms (``model.loss``).

A :class:`LossTerm` applies one criterion (:mod:`salseg.losses.criteria`) to every tensor of
one output group of the model (:class:`~salseg.models.card.ModelOutputs`: ``sides``,
``features``, ``prediction`` or a named auxiliary output) against one target, with a weight
per output.  :class:`LossTerms` sums them.  Configuration (a mapping ``name -> term``, or a
list of terms with a ``name`` each), e.g. U2-Net's official loss::

    bce: {criterion: bce, outputs: sides}                       # weight 1 on the 7 maps

IS-Net phase 2 (``muti_loss_fusion_kl``)::

    bce: {criterion: bce, outputs: sides}
    sync: {criterion: feature, mode: MSE, outputs: features, target: gt_encoder}

and BiRefNet's (``configs/loss/birefnet_dis5k.yaml``): BCE / IoU / SSIM on the 4 levels with
``resize: pred`` and the gradient-branch BCE on ``aux`` outputs against the sigmoid of the
auxiliary labels.  Keys of a term:

* ``criterion``: ``bce`` (default), ``iou``, ``ssim``, ``mae``, ``feature`` or a registered one;
* ``outputs``: the output group (default ``sides``);
* ``weight``: one number, or one per output of the group (default 1);
* ``target``: ``mask`` (default: the batch's mask), ``gt_encoder`` (the frozen GT encoder's
  features of the mask: IS-Net feature sync) or ``aux:<key>`` (the auxiliary output of the same
  index), ``target_fn``: ``null`` or ``sigmoid`` (applied to the target);
* ``resize``: when a map and its target differ in size, ``target`` (default; the target is
  resized to the map, bilinear ``align_corners=True``, the official IS-Net rule) or ``pred``
  (the map is resized to the target, bilinear ``align_corners=True``, before the sigmoid:
  BiRefNet's ``PixLoss`` and gradient loss);
* ``form``: BCE only, ``logits`` / ``official`` (:mod:`salseg.losses.bce`; default: the
  task's ``model.loss_form``);  ``mode``: ``feature`` only (``MSE`` official, ``KL``, ``MAE``,
  ``SmoothL1``);
* ``fused`` (BCE, ``logits`` form; a speed option, ``model.fused_loss``): the maps of the
  target's size in one ``binary_cross_entropy_with_logits`` call on the stacked maps (one
  kernel instead of one per map; equal up to float rounding of the mean);
* ``dtype`` (``feature`` only; ``model.sync_dtype``): ``float32`` (default) or ``bfloat16``,
  the distance computed on bf16 features (half the memory traffic; the value is float32);
* ``finetune``: ``{last_epochs: N, factor: f}``: during the last ``N`` epochs of training the
  weight is multiplied by ``f`` at the start of every epoch, compounding (``f**k`` in the k-th
  fine-tune epoch), as BiRefNet's ``finetune_last_epochs``.

Logged names are ``<term>_<output name>`` (unweighted values, the output names from the card)
and ``loss_<term>`` (the weighted sum of the term) when there is more than one term.  The
total sums each term's weighted outputs in order, then the terms in order: for today's
recipes exactly the sums of :class:`~salseg.losses.DeepSupervisionBCE` and
:class:`~salseg.losses.FeatureSyncLoss`.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from salseg.losses.bce import LOSS_FORMS, bce
from salseg.losses.criteria import get_criterion
from salseg.losses.feature_sync import MODES

TARGETS = ("mask", "gt_encoder")  # or "aux:<key>"
RESIZES = ("target", "pred")
TARGET_FNS = (None, "sigmoid")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
_KEYS = ("name", "criterion", "outputs", "weight", "target", "target_fn", "resize", "form", "mode",
         "fused", "dtype", "finetune")


@dataclass
class LossTerm:
    """One configured term (see the module docstring)."""

    name: str
    criterion: str = "bce"
    outputs: str = "sides"
    weight: float | list[float] = 1.0
    target: str = "mask"
    target_fn: str | None = None
    resize: str = "target"
    form: str | None = None
    mode: str = "MSE"
    fused: bool = False
    dtype: str = "float32"
    finetune: dict | None = None
    _fn: Any = field(default=None, repr=False)
    _on_probs: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        where = f"model.loss.{self.name}"
        if self.criterion != "bce":
            self._fn, self._on_probs = get_criterion(self.criterion)
        if not (self.target in TARGETS or str(self.target).startswith("aux:")):
            raise ValueError(f"{where}.target must be one of {TARGETS} or aux:<key>, "
                             f"got {self.target!r}")
        if self.target_fn not in TARGET_FNS:
            raise ValueError(f"{where}.target_fn must be one of {TARGET_FNS}, got {self.target_fn!r}")
        if self.resize not in RESIZES:
            raise ValueError(f"{where}.resize must be one of {RESIZES}, got {self.resize!r}")
        if self.form is not None and self.form not in LOSS_FORMS:
            raise ValueError(f"{where}.form must be one of {LOSS_FORMS}, got {self.form!r}")
        if self.fused and (self.criterion != "bce" or self.form == "official"):
            raise ValueError(f"{where}.fused (model.fused_loss) needs a BCE term in the logits "
                             f"form (model.loss_form=logits), got {self.criterion} "
                             f"form={self.form}")
        if self.dtype not in DTYPES:
            raise ValueError(f"model.sync_dtype must be one of {tuple(DTYPES)}, got "
                             f"{self.dtype!r} ({where}.dtype)")
        if self.criterion == "feature" and self.mode not in MODES:
            raise ValueError(f"unknown feature-sync mode {self.mode!r}; expected one of {MODES}")
        if isinstance(self.weight, (list, tuple)):
            self.weight = [float(w) for w in self.weight]
        else:
            self.weight = float(self.weight)
        if self.finetune is not None:
            self.finetune = {"last_epochs": int(self.finetune["last_epochs"]),
                             "factor": float(self.finetune["factor"])}

    @classmethod
    def from_config(cls, name: str, cfg: Mapping[str, Any], form: str | None = None,
                    fused: bool = False, sync_dtype: str = "float32") -> LossTerm:
        """A term from its config; ``form``, ``fused`` (BCE terms) and ``sync_dtype``
        (feature terms) are the task's defaults for the keys the term leaves out."""
        unknown = sorted(set(cfg) - set(_KEYS))
        if unknown:
            raise ValueError(f"model.loss.{name}: unknown key(s) {unknown}; expected {list(_KEYS)}")
        kwargs = {k: (dict(v) if isinstance(v, Mapping) else list(v) if isinstance(v, (list, tuple))
                      else v) for k, v in cfg.items() if k != "name"}
        criterion = kwargs.get("criterion", "bce")
        if criterion == "bce" and "fused" not in kwargs:
            kwargs["fused"] = bool(fused)
        if criterion == "feature" and "dtype" not in kwargs:
            kwargs["dtype"] = sync_dtype
        if kwargs.get("fused") and kwargs.get("form") is None:
            kwargs["form"] = form or "logits"
        term = cls(name=name, **kwargs)
        if term.form is None and term.criterion == "bce":
            term.form = form or "logits"
        return term

    # ------------------------------------------------------------------------------------
    def multiplier(self, epoch: int = 0, max_epochs: int | None = None) -> float:
        """The fine-tune factor of ``epoch`` (0-based): ``factor ** k`` in the k-th epoch of
        the last ``last_epochs`` epochs, else 1."""
        if not self.finetune or not max_epochs or max_epochs < 0:
            return 1.0
        k = epoch - (max_epochs - self.finetune["last_epochs"]) + 1
        return self.finetune["factor"] ** k if k > 0 else 1.0

    def weights(self, n: int) -> list[float]:
        if isinstance(self.weight, list):
            if len(self.weight) != n:
                raise ValueError(f"model.loss.{self.name}: {n} {self.outputs} outputs but "
                                 f"{len(self.weight)} weights")
            return list(self.weight)
        return [self.weight] * n

    def value(self, pred: torch.Tensor, target: torch.Tensor, probabilities: bool) -> torch.Tensor:
        """The unweighted criterion of one map (logits, or probabilities if ``probabilities``)."""
        if self.target_fn == "sigmoid":
            target = torch.sigmoid(target)
        if self.criterion == "feature":
            if self.dtype == "float32":
                return self._fn(pred.float(), target.float(), self.mode)
            dtype = DTYPES[self.dtype]
            # autocast would cast the distance's inputs back to float32: off for bf16
            with torch.autocast(pred.device.type, enabled=False):
                return self._fn(pred.to(dtype), target.to(dtype), self.mode).float()
        if pred.shape[-2:] != target.shape[-2:] and self.resize == "pred":
            pred = F.interpolate(pred, size=target.shape[-2:], mode="bilinear", align_corners=True)
        if self.criterion == "bce":
            return bce(pred, target, from_logits=not probabilities, form=self.form or "logits")
        if pred.shape[-2:] != target.shape[-2:]:
            target = F.interpolate(target, size=pred.shape[-2:], mode="bilinear", align_corners=True)
        prob = pred if probabilities else torch.sigmoid(pred)
        return self._fn(prob, target.to(prob.dtype))


def parse_loss(config: Mapping[str, Any] | Iterable[Mapping[str, Any]] | None,
               form: str | None = None, fused: bool = False,
               sync_dtype: str = "float32") -> list[LossTerm]:
    """Terms from ``model.loss`` (a mapping ``name -> term`` or a list of terms with names)."""
    if config is None:
        return []
    if isinstance(config, Mapping):
        items = [(str(k), v) for k, v in config.items() if v is not None]
    else:
        items = []
        for i, v in enumerate(config):
            if "name" not in v:
                raise ValueError(f"model.loss[{i}] has no name")
            items.append((str(v["name"]), v))
    return [LossTerm.from_config(name, cfg or {}, form, fused, sync_dtype) for name, cfg in items]


def fused_bce(pairs: list[tuple[str, torch.Tensor]], targets: list[torch.Tensor]
              ) -> list[torch.Tensor] | None:
    """The BCE (logits form) of every map in one call on the stacked maps, or None when the
    maps and targets differ in shape (then the term is computed map by map)."""
    maps = [p for _, p in pairs]
    if any(m.shape != t.shape for m, t in zip(maps, targets)):
        return None
    stacked = torch.stack(maps)
    if all(t is targets[0] for t in targets):
        target = targets[0].to(stacked.dtype).expand_as(stacked)
    else:
        target = torch.stack(targets).to(stacked.dtype)
    per_pixel = F.binary_cross_entropy_with_logits(stacked, target, reduction="none")
    return list(per_pixel.flatten(1).mean(1).unbind(0))


class LossTerms(nn.Module):
    """The sum of configured :class:`LossTerm`\\ s; ``forward`` returns ``(total, logged)``."""

    def __init__(self, terms: Iterable[LossTerm]) -> None:
        super().__init__()
        self.terms = list(terms)
        if not self.terms:
            raise ValueError("model.loss has no terms")
        names = [t.name for t in self.terms]
        if len(set(names)) != len(names):
            raise ValueError(f"model.loss: duplicate term names {names}")

    @classmethod
    def from_config(cls, config: Any, form: str | None = None) -> LossTerms:
        return cls(parse_loss(config, form))

    @property
    def needs(self) -> set[str]:
        """The targets the terms read besides the outputs (``mask``, ``gt_encoder``)."""
        return {t.target for t in self.terms if not t.target.startswith("aux:")}

    def forward(self, outputs: Any, targets: Mapping[str, Any], probabilities: bool = False,
                epoch: int = 0, max_epochs: int | None = None
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``outputs``: :class:`~salseg.models.card.ModelOutputs` (named by the card);
        ``targets``: ``{"mask": (B, 1, H, W), "gt_encoder": [features]}`` as the terms need."""
        logged: dict[str, torch.Tensor] = {}
        totals: list[torch.Tensor] = []
        for term in self.terms:
            pairs = outputs.group(term.outputs)
            if term.target.startswith("aux:"):
                wanted = outputs.tensors(term.target[4:])
                if len(wanted) != len(pairs):
                    raise ValueError(f"model.loss.{term.name}: {len(pairs)} {term.outputs} outputs but "
                                     f"{len(wanted)} targets {term.target}")
            elif term.target not in targets:
                raise ValueError(f"model.loss.{term.name}: target {term.target!r} is not available")
            else:
                wanted = targets[term.target]
                wanted = list(wanted) if isinstance(wanted, (list, tuple)) else [wanted] * len(pairs)
                if len(wanted) != len(pairs):
                    raise ValueError(f"{len(pairs)} {term.outputs} outputs but {len(wanted)} target "
                                     f"{term.target} tensors")
            weights = term.weights(len(pairs))
            values = (fused_bce(pairs, wanted) if term.fused and not probabilities
                      and term.target_fn is None else None)
            if values is None:
                values = [term.value(p, t, probabilities) for (_, p), t in zip(pairs, wanted)]
            device = values[0].device
            total = sum((w * v for w, v in zip(weights, values)), start=torch.zeros((), device=device))
            scale = term.multiplier(epoch, max_epochs)
            if scale != 1.0:
                total = total * scale
            logged.update({f"{term.name}_{n}": v for (n, _), v in zip(pairs, values)})
            totals.append(total)
        loss = totals[0]
        for t in totals[1:]:
            loss = loss + t
        if len(totals) > 1:
            logged.update({f"loss_{t.name}": v for t, v in zip(self.terms, totals)})
        return loss, logged
