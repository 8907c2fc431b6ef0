"""Checks made before a training run starts, so that ordinary mistakes end with one clear line.

* ``check_config(cfg)``: values that would otherwise fail deep inside Lightning or torch with a
  message that does not name the key (``data.batch_size=0``, ``model.optimizer.lr=-1``,
  ``trainer.max_steps=abc``, ``model.loss_form=official`` under mixed precision, a missing or
  incomplete ``ckpt_path``, ``experiment=finetune`` without ``model.init_weights``) raise :class:`ConfigError` naming the key and what to do.
* ``check_run_dir(out, cfg)``: a run directory that already holds another run's outputs is
  refused unless the run resumes from a checkpoint inside it or ``overwrite=true`` (then the
  previous run's outputs are removed first).  A run that failed before completing anything and
  wrote no checkpoint does not count: a retry may reuse its name.  ``salseg.cli.train.RunDirGuard``
  runs the same check as a Hydra callback, before Hydra writes ``.hydra/`` into the directory.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from salseg.training.checkpoint_io import check_checkpoint_file

# What a training run writes into its directory (removed by overwrite=true); Hydra's own files
# (.hydra/, <job>.log) are rewritten by Hydra itself.
RUN_OUTPUTS = ("checkpoints", "tensorboard", "csv", "gt_encoder", "test", "train_summary.json")
HYDRA_FILES = (".hydra",)
INT_KEYS = ("max_epochs", "max_steps", "min_epochs", "log_every_n_steps",
            "accumulate_grad_batches", "num_sanity_val_steps", "check_val_every_n_epoch",
            "num_nodes")
FULL_PRECISION = ("32-true", "32", "64-true", "64", "transformer-engine-float32")


class ConfigError(ValueError):
    """A configuration value is unusable; the message names the key, the problem and the fix."""


def _get(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key, default=None, throw_on_missing=False)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` for the first unusable value found in a training config."""
    for key in INT_KEYS:
        value = _get(cfg, f"trainer.{key}")
        if value is not None and not _is_int(value):
            raise ConfigError(f"trainer.{key}={value!r}: expected an integer "
                              f"(e.g. trainer.{key}=1000)")
    for key in ("data.batch_size", "data.val_batch_size"):
        value = _get(cfg, key)
        if value is None and key.endswith("val_batch_size"):
            continue
        if not _is_int(value) or value < 1:
            raise ConfigError(f"{key}={value!r}: expected a positive integer (e.g. {key}=8)")
    for key in ("model.optimizer.lr", "model.gt_encoder.optimizer.lr"):
        value = _get(cfg, key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ConfigError(f"{key}={value!r}: the learning rate must be a positive number "
                              "(the paper recipes use 0.001)")
    form = _get(cfg, "model.loss_form")
    precision = str(_get(cfg, "trainer.precision") or "32-true")
    if form == "official" and precision not in FULL_PRECISION:
        raise ConfigError(
            f"model.loss_form=official with trainer.precision={precision}: the official loss "
            "(nn.BCELoss on sigmoid outputs) runs in fp32 only; use trainer.precision=32-true "
            "or model.loss_form=logits")
    if cfg.get("require_init_weights") and not _get(cfg, "model.init_weights"):
        raise ConfigError(
            "experiment=finetune needs model.init_weights: the weights to fine-tune (an official "
            ".pth, a project .ckpt, .safetensors, an .onnx file or a model-zoo name of "
            "`salseg-models list`); model.init_weights=random "
            "fine-tunes from random weights on purpose")
    ckpt = cfg.get("ckpt_path")
    if ckpt and str(ckpt) not in ("last", "best", "hpc", "registry"):  # Lightning's own names
        check_checkpoint_file(ckpt)


def _nothing_done(summary: Path) -> bool:
    """A summary left by a run that failed before completing any stage (e.g. a data error)."""
    try:
        doc = json.loads(summary.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and doc.get("status") != "completed" and not doc.get("completed")


def _failed_without_outputs(out: Path) -> bool:
    """A run that failed before completing anything and wrote no checkpoint (e.g. the data was
    missing): what it left (its summary, an empty tensorboard/ or csv/) is no run to keep, and a
    retry under the same name may use the directory."""
    summary = out / "train_summary.json"
    ckpts = out / "checkpoints"
    return (summary.is_file() and _nothing_done(summary)
            and not (ckpts.is_dir() and any(ckpts.iterdir()))
            and not (out / "gt_encoder").exists() and not (out / "test").exists())


def _leftovers(out: Path) -> list[str]:
    if not out.is_dir() or _failed_without_outputs(out):
        return []
    return sorted(p.name + ("/" if p.is_dir() else "") for p in out.iterdir()
                  if p.name not in HYDRA_FILES and not (p.is_file() and p.suffix == ".log")
                  and not (p.name == "train_summary.json" and _nothing_done(p)))


def _resumes_inside(out: Path, cfg: DictConfig) -> bool:
    ckpt = cfg.get("ckpt_path")
    if not ckpt:
        return False
    try:
        Path(ckpt).resolve().relative_to(out.resolve())
    except ValueError:
        return False
    return True


def check_run_dir(out: Path, cfg: DictConfig) -> None:
    """Refuse a run directory holding another run's outputs (see the module docstring)."""
    found = _leftovers(out)
    if not found or _resumes_inside(out, cfg):
        return
    if cfg.get("overwrite"):
        for name in RUN_OUTPUTS:
            path = out / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        return
    shown = ", ".join(found[:5]) + (", ..." if len(found) > 5 else "")
    last = out / "checkpoints" / "last.ckpt"
    resume = f"resume it with ckpt_path={last}, " if last.is_file() else ""  # only what exists
    raise ConfigError(
        f"{out}: the run directory already holds a run ({shown}); choose another run_name, "
        f"{resume}or pass overwrite=true to replace it")
