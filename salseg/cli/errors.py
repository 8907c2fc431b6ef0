"""One error style for every entry point (console commands, ``train.py``/``eval.py``/``predict.py``
and ``scripts/*.py``): ``salseg-<cmd>: error: <what> (<where>)`` on one line of stderr, exit
code 2 for a user error (bad argument, missing file, unusable data or checkpoint), and the Python
traceback only with ``SALSEG_DEBUG=1``.

* :func:`report` prints one such line (and the traceback under ``SALSEG_DEBUG=1``) and returns
  the exit code; argparse's own usage errors already read ``<prog>: error: ...`` and exit 2.
* :func:`user_error` finds the user-facing error behind an exception (also through Hydra's
  ``InstantiationException``, which wraps what a config's ``_target_`` raised).
* :func:`run_hydra` runs a ``@hydra.main`` function so that Hydra's own composition errors (an
  unknown key, a missing config group option, a bad override) read the same way instead of
  Hydra's "Set the environment variable HYDRA_FULL_ERROR=1" report.
"""
from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

EXIT_USER = 2


def debug_enabled() -> bool:
    """``SALSEG_DEBUG=1`` (any value but empty/0): show tracebacks."""
    return os.environ.get("SALSEG_DEBUG", "") not in ("", "0")


def one_line(text: object) -> str:
    return " ".join(str(text).split())


def format_error(prog: str, what: object, where: object | None = None) -> str:
    """``<prog>: error: <what> (<where>)``; ``prog`` is e.g. ``salseg-eval``."""
    message = one_line(what)
    if where is not None and str(where) and str(where) not in message:
        message += f" ({where})"
    return f"{prog}: error: {message}"


def report(prog: str, what: object, where: object | None = None, code: int = EXIT_USER,
           exc: BaseException | None = None) -> int:
    """Print the error line to stderr (plus the traceback of ``exc``, or of ``what`` when it is
    an exception, under ``SALSEG_DEBUG=1``); return ``code`` for ``main`` to exit with."""
    err = exc if exc is not None else (what if isinstance(what, BaseException) else None)
    if err is not None and debug_enabled():
        traceback.print_exception(type(err), err, err.__traceback__, file=sys.stderr)
    if isinstance(what, BaseException):
        what = describe(what)
    print(format_error(prog, what, where), file=sys.stderr, flush=True)
    return code


def describe(err: BaseException) -> str:
    """The message of ``err`` for the error line: a KeyError's text unquoted; for a Hydra
    override error ("Could not override 'x'. To append ...") its first sentence and the reason
    ("Key 'x' is not in struct")."""
    if isinstance(err, KeyError) and err.args:  # str(KeyError) quotes its message
        return str(err.args[0])
    text = str(err).strip()
    if isinstance(err, hydra_error_types()) and err.__cause__ is not None:
        head = (text.splitlines() or [""])[0].rstrip(".")
        cause = (str(err.__cause__).strip().splitlines() or [""])[0]
        return f"{head}: {cause}" if cause else head
    return text


def user_error_types() -> tuple[type[BaseException], ...]:
    """The project's user-error types (each names the file or value at fault)."""
    from salseg.atomic import OutputExistsError, OutputFolderError
    from salseg.data.errors import DataError
    from salseg.evaluation.errors import EvaluationError
    from salseg.models.errors import WeightsError
    from salseg.training.checkpoint_io import CheckpointFileError
    from salseg.training.checks import ConfigError
    from salseg.zoo.cache import ZooError

    return (ConfigError, CheckpointFileError, DataError, WeightsError, EvaluationError, ZooError,
            OutputExistsError, OutputFolderError)


def hydra_error_types() -> tuple[type[BaseException], ...]:
    """Hydra/OmegaConf errors of the command line (unknown key, bad override, missing option)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    return (HydraException, OmegaConfBaseException)


def user_error(err: BaseException, extra: tuple[type[BaseException], ...] = ()
               ) -> BaseException | None:
    """The user-facing error behind ``err`` (searched along ``__cause__``; a ``ValueError``
    raised by a config's ``_target_`` counts), or None for anything else (a bug: traceback)."""
    from hydra.errors import InstantiationException

    kinds = user_error_types() + tuple(extra)
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, kinds):
            return seen
        if isinstance(seen, InstantiationException) and isinstance(seen.__cause__, ValueError):
            return seen.__cause__
        seen = seen.__cause__
    return None


def run_hydra(prog: str, hydra_main: Callable[[], Any]) -> None:
    """Call a ``@hydra.main`` function; a composition error (e.g. ``Key 'x' is not in struct``)
    or a user error escaping the job ends with one line and exit code 2."""
    from hydra.errors import InstantiationException

    previous = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra re-raises instead of printing its own report
    try:
        hydra_main()
    except Exception as err:
        if isinstance(err, InstantiationException):
            found = user_error(err)
        else:
            found = user_error(err, hydra_error_types())
        if found is None:
            raise
        if debug_enabled():  # the traceback a console script would print, exit code 1
            traceback.print_exception(type(err), err, err.__traceback__, file=sys.stderr)
            sys.exit(1)
        sys.exit(report(prog, found, exc=err))
    finally:
        if previous is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = previous


__all__ = ["EXIT_USER", "debug_enabled", "describe", "format_error", "hydra_error_types", "one_line", "report",
           "run_hydra", "user_error", "user_error_types"]
