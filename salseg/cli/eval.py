"""``salseg-eval`` / ``python eval.py``: Hydra entry point of the evaluation (config
``configs/eval.yaml``; docs/metrics.md).

Folder mode (``pred_dir=... gt_dir=...``) scores saved maps of one or several methods and writes
metrics.json, per_image.csv, curves.json, results.md, pr_curve.png and f_curve.png into the run
directory. Model mode (``ckpt=... data=...``) predicts the data config's test sets with the
checkpoint (the model's official preprocessing, as ``salseg-predict``) and scores them the same way.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from salseg.atomic import write_text_atomic
from salseg.config import CONFIG_DIR
from salseg.data.errors import DataError
from salseg.evaluation import EvaluationError, evaluate_folders
from salseg.evaluation.report import check_free
from salseg.models.weights import WeightsError


def run(cfg: DictConfig, out_dir: str | Path) -> dict:
    """Run the evaluation described by ``cfg``; returns metrics.json's content."""
    if cfg.get("ckpt") or cfg.get("random_weights"):
        return run_model_mode(cfg, out_dir)
    if not cfg.get("pred_dir") or not cfg.get("gt_dir"):
        raise EvaluationError("folder mode needs pred_dir=... and gt_dir=... (see configs/eval.yaml)")
    pred_dir = cfg.pred_dir
    if isinstance(pred_dir, ListConfig):
        pred_dir = [str(p) for p in OmegaConf.to_container(pred_dir)]
    metrics = cfg.get("metrics", "auto")
    if isinstance(metrics, ListConfig):
        metrics = [str(m) for m in metrics]
    torch.set_num_threads(1)  # per-image ops are small; parallelism comes from worker processes
    results, paths = evaluate_folders(
        pred_dir, cfg.gt_dir, out_dir, dataset=cfg.get("dataset"),
        convention=cfg.get("convention", "auto"), groups=metrics,
        on_error=cfg.get("on_error", "strict"), workers=int(cfg.get("workers", 0)),
        skeleton_cache=cfg.get("skeleton_cache"), hce_binarize=cfg.get("hce_binarize", "dis"),
        progress=bool(cfg.get("progress", True)),
        plots=bool(cfg.get("plots", True)), overwrite=bool(cfg.get("overwrite", False)),
    )
    print((Path(out_dir) / "results.md").read_text())
    print(f"reports written to {Path(out_dir).resolve()}: {', '.join(p.name for p in paths.values())}")
    return json.loads(paths["metrics.json"].read_text())


def run_model_mode(cfg: DictConfig, out_dir: str | Path) -> dict:
    """Model mode: a checkpoint + the test sets of ``data=...`` -> predictions -> scores."""
    from hydra.utils import instantiate

    from salseg.evaluation.model import evaluate_model
    from salseg.metrics.collection import convention_for
    from salseg.predict.predictor import Predictor

    if cfg.get("data") is None:
        raise EvaluationError("model mode needs a data config: data=duts_te (or a multirun "
                              "-m data=duts_te,ecssd,...), see configs/data/")
    if cfg.get("pred_dir"):
        raise EvaluationError("give either ckpt=... (model mode) or pred_dir=... (folder mode)")
    model_cfg = cfg.get("model")
    model_name = str(model_cfg.name) if model_cfg is not None else None
    if not cfg.get("ckpt") and not model_name:
        raise EvaluationError("random_weights=true needs model=<name>")
    input_size = cfg.get("input_size")
    predictor_kwargs = dict(
        weights=None if cfg.get("random_weights") else str(cfg.ckpt), model=model_name,
        device=str(cfg.get("device", "auto")), precision=str(cfg.get("precision", "fp32")),
        input_size=list(input_size) if input_size is not None else None,
        resize=str(cfg.get("resize", "official")))
    kwargs = dict(predictor_kwargs)
    predictor = Predictor(kwargs.pop("weights"), **kwargs)
    datamodule = instantiate(cfg.data, verbose=False)
    datamodule.setup("test")
    test_sets = list(datamodule.test_sets or [])
    if not test_sets:  # e.g. data=custom: score every listed pair (train + val) as one set
        datamodule.setup("fit")
        pairs = list(datamodule.train_pairs or []) + list(datamodule.val_pairs or [])
        pairs = [p for p in pairs if not p.hflip]
        if pairs:
            test_sets = [(str(datamodule.name), pairs)]
    if not test_sets:
        raise EvaluationError(f"data={datamodule.name}: no test images to evaluate")
    convention = cfg.get("convention", "auto")
    if convention == "auto":
        convention = datamodule.convention
    convention = convention_for(test_sets[0][0] if test_sets else "", convention)
    metrics = cfg.get("metrics", "auto")
    if isinstance(metrics, ListConfig):
        metrics = [str(m) for m in metrics]
    results, paths = evaluate_model(
        predictor, test_sets, out_dir, convention=convention, method=cfg.get("method"),
        groups=metrics, batch_size=int(cfg.get("batch_size", 4)),
        num_workers=int(cfg.get("num_workers", 0)),
        save_predictions=bool(cfg.get("save_predictions", False)),
        workers=int(cfg.get("workers", 0)), hce_binarize=cfg.get("hce_binarize", "dis"),
        skeleton_cache=cfg.get("skeleton_cache"), progress=bool(cfg.get("progress", True)),
        plots=bool(cfg.get("plots", True)), overwrite=bool(cfg.get("overwrite", False)),
        num_processes=int(cfg.get("num_processes", 1)), predictor_kwargs=predictor_kwargs)
    print((Path(out_dir) / "results.md").read_text())
    print(f"reports written to {Path(out_dir).resolve()}: {', '.join(p.name for p in paths.values())}")
    return json.loads(paths["metrics.json"].read_text())


def record_config(cfg: DictConfig, out_dir: str | Path) -> Path:
    """Write ``.hydra/config.yaml``, ``hydra.yaml`` and ``overrides.yaml`` (what Hydra itself would
    write before the job; configs/eval.yaml turns that off so that nothing is written before the
    run directory is known to be free)."""
    from hydra.core.hydra_config import HydraConfig

    folder = Path(out_dir) / ".hydra"
    hydra_cfg = HydraConfig.instance().cfg
    write_text_atomic(OmegaConf.to_yaml(cfg), folder / "config.yaml", overwrite=True)
    write_text_atomic(OmegaConf.to_yaml(hydra_cfg), folder / "hydra.yaml", overwrite=True)
    write_text_atomic(OmegaConf.to_yaml(hydra_cfg.hydra.overrides.task),
                      folder / "overrides.yaml", overwrite=True)
    return folder


@hydra.main(config_path=str(CONFIG_DIR), config_name="eval", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    out_dir = HydraConfig.get().runtime.output_dir
    try:
        # refuse a kept run before anything is written into it (its .hydra/ included)
        check_free(Path(out_dir), bool(cfg.get("overwrite", False)))
        record_config(cfg, out_dir)
        run(cfg, out_dir)
    except (EvaluationError, WeightsError, DataError, ValueError) as err:
        print(f"salseg-eval: error: {err}", file=sys.stderr)
        sys.exit(2)


def main() -> None:
    _hydra_main()


__all__ = ["main", "run"]
