"""The training pipeline behind ``salseg-train``: build everything from a Hydra config and fit.

* ``train(cfg)`` seeds every process, instantiates the datamodule, task (``cfg.model``), trainer,
  callbacks and loggers, fits (resuming from ``cfg.ckpt_path`` with full state if given) and
  returns the best validation max-F.
* A model whose card names a GT encoder (IS-Net) with feature synchronisation and no
  ``model.gt_encoder_ckpt`` first runs phase 1 (the GT encoder, validated on the training
  masks, stopped by the official maxF > 0.99 rule) into ``<run>/gt_encoder/`` and then phase 2
  with that checkpoint.  ``model=isnet_gt_encoder`` on its own
  (``model.train_on_masks``) runs phase 1 the same way (:mod:`salseg.training.phases`; the
  datamodule's masks-only mode, ``data.mask_only``).
* Before anything runs, the config and the run directory are checked (:mod:`salseg.training.checks`).
* The trainer comes from :mod:`salseg.training.trainer`; checkpoints are written atomically in
  their folder (:mod:`salseg.training.checkpoint_io`).
* ``test=true`` scores the datamodule's test sets after fit with the reported checkpoint through
  the model mode of ``salseg-eval`` (:func:`salseg.evaluation.model.evaluate_model`) into
  ``<run>/test/``.
* ``train_summary.json`` says what was selected on what, which checkpoint a reproduction reports,
  the test scores, and is written even when a stage fails (``status``, ``completed``, ``error``).
* With the :class:`salseg.training.callbacks.StartingPoint` callback (``experiment=finetune``) the
  starting weights, scored before the first step, are a candidate too: the reported checkpoint
  is ``start.ckpt`` unless a trained checkpoint scores at least as well, and the summary records
  ``start_val_maxF`` beside ``best_val_maxF``.
Only rank 0 writes summaries; Lightning's loggers and checkpoints are rank-0-only already.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

from salseg.atomic import write_text_atomic
from salseg.training.callbacks import StartingPoint
from salseg.training.callbacks.starting_point import START_FILE
from salseg.training.checks import check_config, check_run_dir
from salseg.training.phases import needs_phase1, train_gt_encoder
from salseg.training.trainer import make_trainer

log = logging.getLogger("salseg.train")
# model-config keys read by the pipeline, not the task
PIPELINE_KEYS = ("gt_encoder", "train_on_masks")


def run_dir() -> Path:
    try:
        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:  # not under Hydra (tests calling train() directly)
        return Path(os.getcwd())


def task_config(model_cfg: DictConfig) -> DictConfig:
    cfg = OmegaConf.create(OmegaConf.to_container(model_cfg, resolve=True))
    with open_dict(cfg):
        for key in PIPELINE_KEYS:
            cfg.pop(key, None)
    return cfg


def train(cfg: DictConfig) -> float | None:
    """Fit ``cfg.model`` on ``cfg.data``; return the best ``val/maxF`` (None without selection)."""
    check_config(cfg)
    out = run_dir()
    if rank_zero_only.rank == 0:
        check_run_dir(out, cfg)
    L.seed_everything(cfg.get("seed"), workers=True)
    record = RunRecord(cfg)
    try:
        if needs_phase1(cfg):
            ckpt = train_gt_encoder(cfg, out)
            record.completed.append("gt_encoder")
            record.extra["gt_encoder_checkpoint"] = str(ckpt)
            with open_dict(cfg):
                cfg.model.gt_encoder_ckpt = str(ckpt)
            L.seed_everything(cfg.get("seed"), workers=True)
        if cfg.model.get("train_on_masks"):
            datamodule = instantiate(cfg.data, mask_only=True)  # the masks-only mode
        else:
            datamodule = instantiate(cfg.data)
        task = instantiate(task_config(cfg.model), input_size=list(datamodule.input_size),
                           _convert_="all")
        trainer = make_trainer(cfg, out)
        record.trainer, record.datamodule = trainer, datamodule
        trainer.fit(task, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        record.completed.append("fit")
        if cfg.get("test"):
            record.test = run_test(cfg, datamodule, task, record.reported_checkpoint(), out)
            record.completed.append("test")
        record.status = "completed"
    except BaseException as err:
        record.status = "interrupted" if isinstance(err, KeyboardInterrupt | SystemExit) else "failed"
        record.error = f"{type(err).__name__}: {err}"
        raise
    finally:
        write_summary(out, record)
    return record.best()


def run_test(cfg: DictConfig, datamodule: Any, task: Any, ckpt: str | None, out: Path) -> dict:
    """Score the datamodule's test sets with ``ckpt`` exactly as ``salseg-eval`` model mode does
    (same Predictor preprocessing, GT resolution, paper metrics); reports in ``<run>/test/``."""
    if rank_zero_only.rank != 0:
        return {}
    if cfg.model.get("train_on_masks"):
        log.warning("test=true: the GT encoder takes masks, not images; no test")
        return {"skipped": "the GT encoder takes masks, not images"}
    from salseg.evaluation.model import evaluate_model
    from salseg.metrics.collection import convention_for
    from salseg.predict.predictor import Predictor

    datamodule.setup("test")
    test_sets = [(name, pairs) for name, pairs in datamodule.test_sets or [] if pairs]
    if not test_sets:
        log.warning("test=true: data=%s has no test set", datamodule.name)
        return {"skipped": f"data={datamodule.name} has no test set"}
    device = "cpu" if str(cfg.trainer.get("accelerator")) == "cpu" else "auto"
    if ckpt is not None:  # the checkpoint file, as salseg-eval ckpt=... reads it
        predictor = Predictor(ckpt, model=task.name, device=device)
    else:  # no checkpoint written (callbacks=none): the weights in memory
        predictor = Predictor(task.model, model=task.name, device=device,
                              input_size=list(datamodule.input_size))
    convention = convention_for(test_sets[0][0], datamodule.convention)
    log.info("test=true: scoring %s with %s", ", ".join(n for n, _ in test_sets), ckpt or "the final weights")
    _, paths = evaluate_model(predictor, test_sets, out / "test", convention=convention,
                              batch_size=datamodule.loader.val_batch_size, workers=1,
                              progress=bool(cfg.trainer.get("enable_progress_bar", True)),
                              overwrite=True)
    return {"checkpoint": ckpt, "dir": str(out / "test"),
            "metrics": json.loads(paths["metrics.json"].read_text())}


class RunRecord:
    """What a run did so far, for ``train_summary.json``."""

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        self.status = "running"
        self.completed: list[str] = []
        self.error: str | None = None
        self.trainer: L.Trainer | None = None
        self.datamodule: Any = None
        self.test: dict | None = None
        self.extra: dict[str, Any] = {}

    def checkpoint_callback(self) -> ModelCheckpoint | None:
        return self.trainer.checkpoint_callback if self.trainer is not None else None

    def starting_point(self) -> tuple[float | None, str | None]:
        """The starting weights' score and checkpoint (``StartingPoint`` callback), if any."""
        cb = next((c for c in (self.trainer.callbacks if self.trainer else [])
                   if isinstance(c, StartingPoint)), None)
        if cb is None:
            return None, None
        score, path = cb.score, cb.path
        if score is None and self.trainer is not None:  # ddp_spawn: the state stays in the workers
            value = self.trainer.callback_metrics.get(cb.log_key)
            score = float(value) if value is not None else None
            ckpt_cb = self.checkpoint_callback()
            candidate = Path(ckpt_cb.dirpath or ".") / START_FILE if ckpt_cb is not None else None
            path = str(candidate) if candidate is not None and candidate.is_file() else None
        return (score, path) if score is not None and path else (None, None)

    def start_wins(self) -> bool:
        """Whether no trained checkpoint scores at least as well as the starting weights."""
        score, _ = self.starting_point()
        if score is None:
            return False
        cb = next(c for c in self.trainer.callbacks if isinstance(c, StartingPoint))
        return cb.better(self.trained_best())

    def best(self) -> float | None:
        if self.start_wins():
            return self.starting_point()[0]
        return self.trained_best()

    def trained_best(self) -> float | None:
        ckpt_cb = self.checkpoint_callback()
        if ckpt_cb is None or not ckpt_cb.monitor:
            return None
        if ckpt_cb.best_model_score is not None:
            return float(ckpt_cb.best_model_score)
        if ckpt_cb.best_model_path:  # ddp_spawn returns only the path
            return checkpoint_score(ckpt_cb.best_model_path)
        return None

    def best_checkpoint(self) -> str | None:
        if self.start_wins():
            return self.starting_point()[1]
        ckpt_cb = self.checkpoint_callback()
        if ckpt_cb is None or not ckpt_cb.monitor:
            return None
        return ckpt_cb.best_model_path or None

    def reported_checkpoint(self) -> str | None:
        """The weights a run reports: the best by the selection metric when one is configured,
        else the final weights (``last.ckpt``; the paper protocol)."""
        return self.best_checkpoint() or last_checkpoint(self.checkpoint_callback())

    def selection(self) -> dict[str, Any]:
        """What checkpoint selection and early stopping monitor, and on which data."""
        monitors = sorted({str(cb.monitor) for cb in (self.trainer.callbacks if self.trainer else [])
                           if isinstance(getattr(cb, "monitor", None), str)
                           and not isinstance(cb, LearningRateMonitor)})
        dm = self.datamodule
        sources = getattr(dm, "sources", None)  # a SegDataModule's DataSources
        if dm is None:
            data: list[str] | str = []
        elif self.cfg.model.get("train_on_masks"):
            data = "the training masks (a card that takes masks: its GT-encoder phase, official)"
        elif sources is not None and sources.val:
            data = [str(s.get("name") or f"{s.get('kind')}:{s.get('split', '')}") for s in sources.val]
        elif sources is not None and sources.val_split > 0:
            data = (f"seeded hold-out of {sources.val_split:g} of the training pairs "
                    f"(seed {dm.loader.seed})")
        else:
            data = []
        monitored = [name for name, _ in getattr(dm, "monitor_sets", None) or []]
        rule = ("best by the selection metric" if self.best_checkpoint()
                else "final weights (last.ckpt), no selection")
        if self.starting_point()[0] is not None:
            rule += ", the starting weights (start.ckpt) included as a candidate"
        return {"monitors": monitors if data else [], "data": data,
                "test_monitor": monitored, "reported_checkpoint": self.reported_checkpoint(),
                "rule": rule}


def checkpoint_score(path: str) -> float | None:
    """The ModelCheckpoint score stored in one of our own Lightning checkpoints."""
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    for key, value in state.get("callbacks", {}).items():
        if key.startswith("ModelCheckpoint") and value.get("best_model_score") is not None:
            return float(value["best_model_score"])
    return None


def last_checkpoint(ckpt_cb: ModelCheckpoint | None) -> str | None:
    if ckpt_cb is None:
        return None
    if ckpt_cb.last_model_path:
        return ckpt_cb.last_model_path
    candidate = Path(ckpt_cb.dirpath or ".") / "last.ckpt"  # ddp_spawn: paths stay in the workers
    return str(candidate) if candidate.is_file() else None


@rank_zero_only
def write_summary(out: Path, record: RunRecord) -> None:
    trainer, cfg = record.trainer, record.cfg
    start = record.starting_point()
    summary: dict[str, Any] = {
        "model": str(cfg.model.name),
        "status": record.status,
        "completed": record.completed,
        "error": record.error,
        "selection": record.selection(),
        "reported_checkpoint": record.reported_checkpoint(),
        "best_val_maxF": record.best(),
        "best_checkpoint": record.best_checkpoint(),
        **({"start_val_maxF": start[0], "start_checkpoint": start[1],
            "trained_best_val_maxF": record.trained_best()} if start[0] is not None else {}),
        "last_checkpoint": last_checkpoint(record.checkpoint_callback()),
        "global_step": trainer.global_step if trainer is not None else 0,
        "epochs": trainer.current_epoch if trainer is not None else 0,
        "metrics": ({k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
                    if trainer is not None else {}),
        "test": record.test,
        **record.extra,
    }
    # a resumed run updates the summary of the run it continues
    write_text_atomic(json.dumps(summary, indent=2), out / "train_summary.json", overwrite=True)
