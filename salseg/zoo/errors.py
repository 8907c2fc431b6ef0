"""The model zoo's error type: a file that could not be obtained or failed verification.

Raised by the cache (:mod:`salseg.zoo.cache`: download, checksum, offline miss) and by the
download check (:mod:`salseg.zoo.validate`); the console commands report it as a user error.
"""
from __future__ import annotations


class ZooError(RuntimeError):
    """A zoo file could not be obtained or failed verification."""


__all__ = ["ZooError"]
