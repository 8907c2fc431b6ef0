"""Matching prediction files to ground-truth files by file stem, with the strict / skip policy of
``on_error``: ``strict`` fails listing every unmatched name, ``skip`` scores the intersection and
reports what was left out."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from salseg.evaluation.errors import EvaluationError
from salseg.evaluation.io import list_maps

ON_ERROR = ("strict", "skip")
MAX_LISTED = 20


@dataclass
class MatchResult:
    pairs: list[tuple[str, Path, Path]]  # (name, prediction path, GT path), sorted by name
    missing_prediction: list[str] = field(default_factory=list)  # GT without a prediction
    missing_gt: list[str] = field(default_factory=list)  # prediction without a GT

    @property
    def n_skipped(self) -> int:
        return len(self.missing_prediction) + len(self.missing_gt)


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_LISTED])
    more = f" ... and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else ""
    return shown + more


def match_folders(pred_dir: str | Path, gt_dir: str | Path, on_error: str = "strict") -> MatchResult:
    """Pair the maps of ``pred_dir`` and ``gt_dir`` by file stem."""
    if on_error not in ON_ERROR:
        raise EvaluationError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    preds, gts = list_maps(pred_dir), list_maps(gt_dir)
    if not gts:
        raise EvaluationError(f"{gt_dir}: no ground-truth maps found")
    if not preds:
        raise EvaluationError(f"{pred_dir}: no prediction maps found")
    missing_pred = sorted(set(gts) - set(preds))
    missing_gt = sorted(set(preds) - set(gts))
    if (missing_pred or missing_gt) and on_error == "strict":
        lines = [f"prediction folder {pred_dir} and GT folder {gt_dir} do not match:"]
        if missing_pred:
            lines.append(f"  {len(missing_pred)} GT maps without a prediction: {_listing(missing_pred)}")
        if missing_gt:
            lines.append(f"  {len(missing_gt)} predictions without a GT map: {_listing(missing_gt)}")
        lines.append("  (on_error=skip scores the intersection)")
        raise EvaluationError("\n".join(lines))
    names = sorted(set(preds) & set(gts))
    if not names:
        raise EvaluationError(f"{pred_dir} and {gt_dir} have no map name in common")
    return MatchResult([(n, preds[n], gts[n]) for n in names], missing_pred, missing_gt)
