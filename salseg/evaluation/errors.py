"""The error raised for bad evaluation input (unreadable files, unmatched folders, bad options)."""
from __future__ import annotations


class EvaluationError(ValueError):
    """Bad evaluation input; the message names the file or folder and the problem."""
