"""Errors raised by the data layer.

Every error names the offending file (or folder) and the problem, so that a user can fix the
input without reading a traceback.
"""
from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """A data file or dataset layout is unusable.

    ``path`` is the offending file or folder (``None`` when the problem is not tied to one
    path) and ``problem`` the human-readable reason; ``str(err)`` combines both.
    """

    def __init__(self, problem: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(problem if path is None else f"{path}: {problem}")


class DataLayoutError(DataError):
    """A dataset root or folder layout is missing or does not match what a source expects."""


class DataCheckError(DataError):
    """Validation found errors; ``issues`` lists every one of them (strict mode)."""

    def __init__(self, problem: str, issues: list | None = None) -> None:
        super().__init__(problem)
        self.issues = list(issues or [])


class DataOptionError(DataError):
    """A ``data.<key>`` value of a data config is unknown or unusable (the message names the key)."""
