"""The dataset-level maxF conventions as records (docs/metrics.md, "Two maxF conventions").

A :class:`Convention` says everything the rest of salseg needs about a convention: which
result key is its ``max_f`` and which curve its figures draw, the paper layout of its report
table, the metric groups scored by default, and its description.  Reports, folder mode and
validation look a convention up here instead of comparing its name.

* ``u2net``: U2-Net / BASNet (Binary-Segmentation-Evaluation-Tool): F of the mean P and R
  curves, 255 thresholds; the six SOD benchmarks (no HCE: slow, DIS-only).
* ``dis``: the DIS paper (its toolbox = pysodmetrics): max of the mean per-image F curve, 256
  thresholds; DIS5K, every metric group.
"""
from __future__ import annotations

from dataclasses import dataclass

#: the two conventions' names (named after the papers' protocols, not after models)
SOD_CONVENTION = "u2net"
DIS_CONVENTION = "dis"
DEFAULT_CONVENTION = SOD_CONVENTION

ALL_GROUPS = ("fmeasure", "mae", "wf", "sm", "em", "relax_fb", "hce", "dis_valid")
SOD_GROUPS = ("fmeasure", "mae", "wf", "sm", "em", "relax_fb")


@dataclass(frozen=True)
class Convention:
    name: str
    description: str
    max_f_key: str  # the result key that is ``max_f``
    curve: str  # the curves drawn in the figures (``mean_pr`` / ``mean_curve``)
    table: str  # report layout: ``sod`` (U2-Net paper) or ``dis`` (DIS paper)
    paper: str  # the paper named in the report heading
    kind: str  # the task named in the report heading
    groups: tuple[str, ...]  # metric groups scored by default (``groups=auto``)


CONVENTION_RECORDS = {c.name: c for c in (
    Convention(SOD_CONVENTION, "U2-Net / BASNet convention: F-measure of the mean-over-images precision "
               "and recall curves, 255 thresholds (Binary-Segmentation-Evaluation-Tool)",
               "max_f_mean_pr", "mean_pr", "sod", "U2-Net", "Salient object detection",
               SOD_GROUPS),
    Convention(DIS_CONVENTION, "DIS convention: maximum of the mean of the per-image F-measure curves, "
               "256 thresholds (DIS paper toolbox = pysodmetrics)",
               "max_f_mean_curve", "mean_curve", "dis", "DIS", "Dichotomous image segmentation",
               ALL_GROUPS),
)}


def get_convention(name: str) -> Convention:
    if name not in CONVENTION_RECORDS:
        raise ValueError(f"convention must be one of {sorted(CONVENTION_RECORDS)}, got {name!r}")
    return CONVENTION_RECORDS[name]
