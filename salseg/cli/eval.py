"""``salseg-eval`` / ``python eval.py``: Hydra entry point of the evaluation (config
``configs/eval.yaml``; docs/metrics.md).

Folder mode (``pred_dir=... gt_dir=...``) scores saved maps of one or several methods and writes
metrics.json, per_image.csv, curves.json, results.md, report.html (+ report_files/), pr_curve.png
and f_curve.png into the run directory. Model mode (``ckpt=... data=...``) predicts the data
config's test sets with the checkpoint (the model's official preprocessing, as ``salseg-predict``) and scores them the same way.
``ckpt`` may be a model-zoo name (docs/zoo.md); then the paper's published row and the difference
are written beside each measured row (results.md, paper_comparison.json).  Under ``torchrun``
(``python -m salseg.cli.eval``, with ``run_name=...``) the model mode's predictions are split
between the launched processes and rank 0 scores (docs/distributed.md).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from salseg.atomic import write_text_atomic
from salseg.cli.errors import debug_enabled, report, run_hydra, user_error
from salseg.config import CONFIG_DIR
from salseg.evaluation import EvaluationError, evaluate_folders
from salseg.evaluation.report import check_free
from salseg.predict.parallel import launched_rank

PROG = "salseg-eval"


def run(cfg: DictConfig, out_dir: str | Path) -> dict:
    """Run the evaluation described by ``cfg``; returns metrics.json's content."""
    if cfg.get("paper_table") and not (cfg.get("ckpt") or cfg.get("random_weights")):
        # e.g. reproduce=u2net_dis5k, whose model is one the user trained
        raise EvaluationError(f"paper_table={cfg.paper_table} compares a model with the paper: "
                              "pass ckpt=<checkpoint> (e.g. a training run's "
                              "reported_checkpoint, in its train_summary.json)")
    if cfg.get("ckpt") or cfg.get("random_weights"):
        return run_model_mode(cfg, out_dir)
    if launched_rank() is not None:
        raise EvaluationError("folder mode runs in one process: start it without torchrun/srun "
                              "(model mode shards its predictions between launched processes)")
    if not cfg.get("pred_dir") or not cfg.get("gt_dir"):
        raise EvaluationError(
            "nothing to score: folder mode needs pred_dir=MAPS gt_dir=MASKS; model mode needs "
            "ckpt=CHECKPOINT (or a zoo name) data=DATASET, or random_weights=true model=NAME "
            "data=DATASET (docs/metrics.md)")
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
        html=bool(cfg.get("html", True)), image_dir=cfg.get("image_dir"),
    )
    print((Path(out_dir) / "results.md").read_text())
    print(f"reports written to {Path(out_dir).resolve()}: {', '.join(p.name for p in paths.values())}")
    return json.loads(paths["metrics.json"].read_text())


def run_model_mode(cfg: DictConfig, out_dir: str | Path) -> dict:
    """Model mode (see :func:`salseg.evaluation.model.run_model_mode`): print and return."""
    from salseg.evaluation.model import run_model_mode as evaluate_config

    tables = paper_tables(cfg)  # an unknown paper_table fails before any work
    results, paths = evaluate_config(cfg, out_dir)
    if not results:  # a launched rank other than 0: its maps are written, rank 0 reports
        return {}
    paths.update(write_paper_comparison(tables, results, out_dir))
    print((Path(out_dir) / "results.md").read_text())
    print(f"reports written to {Path(out_dir).resolve()}: {', '.join(p.name for p in paths.values())}")
    return json.loads(paths["metrics.json"].read_text())


def paper_tables(cfg: DictConfig) -> tuple[list[str], str | None]:
    """The published tables to compare with (``paper_table``, else the zoo entry's) and the
    name of the measured model; ``([], None)`` when there are none (random weights included)."""
    from salseg.zoo.published import rows_for
    from salseg.zoo.resolve import zoo_entry_for

    table = cfg.get("paper_table")
    ckpt = cfg.get("ckpt")
    if table:
        keys = [str(t) for t in (table if isinstance(table, ListConfig) else [table])]
        for key in keys:
            try:
                rows_for(key)
            except KeyError as exc:
                raise EvaluationError(f"paper_table={key}: {exc.args[0]}") from None
        return keys, str(cfg.get("method") or ckpt or "model")
    if cfg.get("random_weights") or not ckpt:
        return [], None
    entry = zoo_entry_for(str(ckpt))
    if entry is None or not entry.published:
        return [], None
    return list(entry.published), entry.name


def write_paper_comparison(tables: tuple[list[str], str | None], results: dict,
                           out_dir: str | Path) -> dict[str, Path]:
    """With published scores to compare with (a ``reproduce=...`` recipe, ``paper_table=...``
    or a model-zoo name): for every dataset of the paper's table the measured row, the paper row
    and the difference, then the measured row among the paper's methods, appended to results.md
    and written to paper_comparison.json.  ``tables``: what :func:`paper_tables` returns."""
    from salseg.zoo.published import comparison, comparison_markdown, leaderboard_markdown

    keys, model = tables
    if not keys:
        return {}
    measured = {ds: sc.summary for per_ds in results.values() for ds, sc in per_ds.items()}
    rows = comparison(keys, measured)
    out = Path(out_dir)
    md = out / "results.md"
    text = md.read_text() + "\n" + comparison_markdown(model, rows)
    text += "\n" + "\n".join(leaderboard_markdown(key, measured, model) for key in keys)
    write_text_atomic(text, md, overwrite=True)  # this run's own report, just written
    path = write_text_atomic(json.dumps({"model": model, "tables": keys, "rows": rows},
                                        indent=2) + "\n",
                             out / "paper_comparison.json", overwrite=True)
    return {"paper_comparison.json": path}


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
    launched = launched_rank()
    try:
        if launched is not None and not any(
                o.startswith("run_name=") for o in HydraConfig.get().overrides.task):
            raise EvaluationError("under torchrun/srun pass run_name=... (every process must "
                                  "use the same run directory; the default is a time stamp)")
        # refuse a kept run before anything is written into it (its .hydra/ included)
        check_free(Path(out_dir), bool(cfg.get("overwrite", False)))
        if launched is None or launched.rank == 0:
            record_config(cfg, out_dir)
        run(cfg, out_dir)
    except Exception as err:
        found = user_error(err, (ValueError,))
        if found is None or debug_enabled():
            raise
        sys.exit(report(PROG, found, exc=err))
    except KeyboardInterrupt:  # e.g. during a model-zoo download: nothing partial is kept
        print(f"{PROG}: interrupted", file=sys.stderr)
        sys.exit(130)


def main() -> None:
    run_hydra(PROG, _hydra_main)


__all__ = ["main", "run"]

if __name__ == "__main__":  # python -m salseg.cli.eval (e.g. under torchrun)
    main()
