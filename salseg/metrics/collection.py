"""The papers' metric sets in one object: :class:`SaliencyMetrics` feeds every pair to the
individual metrics once and returns the result dictionary used by validation, ``salseg-eval`` and
the benchmarks (keys listed in ``RESULT_KEYS``), plus the curves for the figures.

``convention`` says which dataset-level maxF is ``max_f`` (docs/metrics.md, "Two maxF
conventions"):

* ``"u2net"`` - U2-Net / BASNet (Binary-Segmentation-Evaluation-Tool): F of the mean P and R
  curves, 255 thresholds (``max_f_mean_pr``). Used for the six SOD benchmarks.
* ``"dis"`` - the DIS paper (its toolbox = pysodmetrics): max of the mean per-image F curve,
  256 thresholds (``max_f_mean_curve``). Used for DIS5K.

Both are always computed and reported under their own names.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

import torch

from salseg.metrics.base import PairScore, SumMetric
from salseg.metrics.conventions import (  # noqa: F401
    ALL_GROUPS,
    CONVENTION_RECORDS,
    DEFAULT_CONVENTION,
    DIS_CONVENTION,
    SOD_CONVENTION,
    SOD_GROUPS,
)
from salseg.metrics.e_measure import EMeasure
from salseg.metrics.fmeasure import FMeasureDISValid, FMeasureMeanCurve, FMeasureMeanPR
from salseg.metrics.hce import HumanCorrectionEffort
from salseg.metrics.mae import MAE
from salseg.metrics.protocol import MapPair, iter_pairs
from salseg.metrics.relax_boundary_f import RelaxedBoundaryFMeasure
from salseg.metrics.s_measure import SMeasure
from salseg.metrics.weighted_f import WeightedFMeasure

CONVENTIONS = tuple(CONVENTION_RECORDS)
RESULT_KEYS = (
    "max_f", "max_f_mean_pr", "max_f_mean_curve", "mean_f", "adp_f", "mae", "wf", "sm",
    "mean_em", "max_em", "adp_em", "relax_fb", "hce", "n_images",
)


def convention_for(dataset: str, convention: str = "auto") -> str:
    """``auto`` -> ``dis`` for DIS5K sets (name containing "dis"), else ``u2net``."""
    if convention == "auto":
        return DIS_CONVENTION if "dis" in dataset.lower() else SOD_CONVENTION
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS} or 'auto', got {convention!r}")
    return convention


class ImageCount(SumMetric):
    """Number of images seen (summed over processes)."""

    def score_pair(self, pair: MapPair) -> PairScore:
        return PairScore({}, {})

    def compute(self) -> torch.Tensor:
        return self.n_images


class SaliencyMetrics(torch.nn.Module):
    """All metrics of the U2-Net and DIS papers for one dataset.

    ``update(preds, target)`` takes probability maps (float in [0, 1] or uint8 0..255; (B,1,H,W),
    (B,H,W) or (H,W)) and GTs of the same size, and returns one row of per-image values per image.
    ``compute()`` returns the dataset dictionary (``RESULT_KEYS`` plus extras) with the curves
    under ``"curves"``. Metrics not in ``groups`` are reported as ``None``. Each metric is a
    torchmetrics ``Metric`` with sum states, so ``compute()`` is correct under DDP.
    """

    def __init__(
        self,
        convention: str = DEFAULT_CONVENTION,
        groups: Iterable[str] = ALL_GROUPS,
        hce_binarize: str = "dis",
        skeleton_cache: str | None = None,
        **metric_kwargs: Any,
    ) -> None:
        super().__init__()
        if convention not in CONVENTIONS:
            raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
        groups = tuple(groups)
        unknown = set(groups) - set(ALL_GROUPS)
        if unknown:
            raise ValueError(f"unknown metric groups {sorted(unknown)}; known: {ALL_GROUPS}")
        self.convention = convention
        self.groups = groups
        kw = dict(metric_kwargs)
        metrics: dict[str, SumMetric] = {"count": ImageCount(**kw)}
        if "fmeasure" in groups:
            metrics["f_mean_curve"] = FMeasureMeanCurve(**kw)
            metrics["f_mean_pr"] = FMeasureMeanPR(**kw)
        if "dis_valid" in groups:
            metrics["f_dis_valid"] = FMeasureDISValid(**kw)
            metrics["mae_dis_valid"] = MAE("dis_valid", **kw)
        if "mae" in groups:
            metrics["mae"] = MAE("pysodmetrics", **kw)
            metrics["mae_bset"] = MAE("bset", **kw)
        if "wf" in groups:
            metrics["wf"] = WeightedFMeasure(**kw)
        if "sm" in groups:
            metrics["sm"] = SMeasure(**kw)
        if "em" in groups:
            metrics["em"] = EMeasure(**kw)
        if "relax_fb" in groups:
            metrics["relax_fb"] = RelaxedBoundaryFMeasure(**kw)
        if "hce" in groups:
            metrics["hce"] = HumanCorrectionEffort(
                binarize=hce_binarize, skeleton_cache=skeleton_cache, **kw
            )
        self.metrics = torch.nn.ModuleDict(metrics)

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> list[dict[str, float]]:
        return [self.update_pair(pair) for pair in iter_pairs(preds, target)]

    def update_pair(
        self,
        pair: MapPair,
        precomputed: dict[str, PairScore] | None = None,
        skip: Iterable[str] = (),
    ) -> dict[str, float]:
        """Score one pair with every metric and return its per-image row. ``precomputed`` may hold
        some metrics' scores (by metric name, e.g. ``"hce"`` computed in a worker process);
        metrics named in ``skip`` are left out now and added later with :meth:`accumulate`."""
        row: dict[str, float] = {}
        for name, metric in self.metrics.items():
            if name in skip:
                continue
            score = precomputed[name] if precomputed and name in precomputed else metric.score_pair(pair)
            metric.accumulate(score)
            row.update(score.row)
        return row

    def accumulate(self, name: str, score: PairScore) -> None:
        """Add a score computed elsewhere to metric ``name`` (see ``skip`` of :meth:`update_pair`)."""
        self.metrics[name].accumulate(score)

    def reset(self) -> None:
        for metric in self.metrics.values():
            metric.reset()

    def compute(self) -> dict[str, Any]:
        """Dataset values (python floats) and curves (lists, index = threshold)."""
        with warnings.catch_warnings():  # computing before any update is fine here: zeros
            warnings.filterwarnings("ignore", message=".*was called before the ``update``.*")
            m = {name: metric.compute() for name, metric in self.metrics.items()}
        out: dict[str, Any] = dict.fromkeys(RESULT_KEYS)
        curves: dict[str, Any] = {}
        if "f_mean_curve" in m:
            mc, pr = m["f_mean_curve"], m["f_mean_pr"]
            out["max_f_mean_curve"] = float(mc["max_f"])
            out["max_f_mean_pr"] = float(pr["max_f"])
            out["mean_f_mean_curve"] = float(mc["mean_f"])
            out["mean_f_mean_pr"] = float(pr["mean_f"])
            # the convention's max_f is one of the two curves (its record names which)
            chosen = {"max_f_mean_pr": pr, "max_f_mean_curve": mc}[
                CONVENTION_RECORDS[self.convention].max_f_key]
            out["max_f"] = float(chosen["max_f"])
            out["mean_f"] = float(chosen["mean_f"])
            out["max_f_threshold"] = int(chosen["argmax_threshold"])
            out["adp_f"] = float(mc["adp_f"])
            curves["mean_curve"] = {
                "thresholds": list(range(256)),
                "precision": mc["precision"].tolist(),
                "recall": mc["recall"].tolist(),
                "f": mc["f_curve"].tolist(),
            }
            curves["mean_pr"] = {
                "thresholds": list(range(255)),
                "precision": pr["precision"].tolist(),
                "recall": pr["recall"].tolist(),
                "f": pr["f_curve"].tolist(),
            }
        if "f_dis_valid" in m:
            out["max_f_dis_valid"] = float(m["f_dis_valid"]["max_f"])
            out["mae_dis_valid"] = float(m["mae_dis_valid"])
        if "mae" in m:
            out["mae"] = float(m["mae"])
            out["mae_bset"] = float(m["mae_bset"])
        if "wf" in m:
            out["wf"] = float(m["wf"])
        if "sm" in m:
            out["sm"] = float(m["sm"])
        if "em" in m:
            em = m["em"]
            out.update(mean_em=float(em["mean_em"]), max_em=float(em["max_em"]),
                       adp_em=float(em["adp_em"]))
            curves["em"] = em["em_curve"].tolist()
        if "relax_fb" in m:
            out["relax_fb"] = float(m["relax_fb"]["relax_fb"])
        if "hce" in m:
            out["hce"] = float(m["hce"]["hce"])
            for part in ("fp_points", "fp_indep", "fn_points", "fn_indep"):
                out[f"hce_{part}"] = float(m["hce"][part])
        out["n_images"] = int(m["count"])
        out["convention"] = self.convention
        out["curves"] = curves
        return out
