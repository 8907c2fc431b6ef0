"""Evaluation metrics of the U2-Net and DIS papers as torchmetrics ``Metric`` objects, exact to the
reference tools (pysodmetrics, the U2-Net/BASNet evaluation tool, DIS's HCE); see docs/metrics.md."""
from salseg.metrics.collection import (
    ALL_GROUPS,
    CONVENTIONS,
    RESULT_KEYS,
    SOD_GROUPS,
    SaliencyMetrics,
    convention_for,
)
from salseg.metrics.e_measure import EMeasure
from salseg.metrics.fmeasure import FMeasureDISValid, FMeasureMeanCurve, FMeasureMeanPR
from salseg.metrics.hce import HumanCorrectionEffort, SkeletonCache, hce_parts
from salseg.metrics.mae import MAE
from salseg.metrics.protocol import MapPair, resize_to_gt
from salseg.metrics.relax_boundary_f import RelaxedBoundaryFMeasure
from salseg.metrics.s_measure import SMeasure
from salseg.metrics.weighted_f import WeightedFMeasure

__all__ = [
    "ALL_GROUPS", "CONVENTIONS", "RESULT_KEYS", "SOD_GROUPS", "EMeasure", "FMeasureDISValid",
    "FMeasureMeanCurve", "FMeasureMeanPR", "HumanCorrectionEffort", "MAE", "MapPair",
    "RelaxedBoundaryFMeasure", "SMeasure", "SaliencyMetrics", "SkeletonCache", "WeightedFMeasure",
    "convention_for", "hce_parts", "resize_to_gt",
]
