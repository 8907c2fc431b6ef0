"""Scoring of saved prediction maps (folder mode of ``salseg-eval``) and of predictions fed from a
model (``score_pairs``), and the reports: metrics.json, per-image CSV, results.md, PR/F curves."""
from salseg.evaluation.errors import EvaluationError
from salseg.evaluation.folder import evaluate_folders, resolve_methods
from salseg.evaluation.pairs import match_folders
from salseg.evaluation.scoring import DatasetScores, score_pairs

__all__ = [
    "DatasetScores", "EvaluationError", "evaluate_folders", "match_folders", "resolve_methods",
    "score_pairs",
]
