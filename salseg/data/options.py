"""The option records of :class:`salseg.data.datamodule.SegDataModule`, one concept each.

A data config (``configs/data/*.yaml`` on ``configs/data/base/datamodule.yaml``) is a flat list of
``data.<key>`` values.  Besides the datamodule's own keys (name, root, aug, convention, ...) they
fall into three groups, each a frozen record that validates its values when it is built:

* :class:`DataSources`: which pairs are listed: ``train`` / ``val`` / ``test`` / ``mix`` /
  ``monitor`` source specs (:mod:`salseg.data.sources`), the custom shortcuts ``images`` /
  ``masks`` / ``val_images`` / ``val_masks`` / ``pairs_file`` / ``val_pairs_file`` expanded into
  specs, ``offline_hflip`` applied to the DUTS training sources, and ``val_split``.
* :class:`LoaderOptions`: how batches are served: ``batch_size``, ``val_batch_size`` (``null``:
  ``batch_size``), ``num_workers`` (an integer or ``auto``), ``persistent_workers``,
  ``pin_memory``, ``drop_last``, ``seed`` and ``gpu_aug``.
* :class:`CheckPolicy`: how listed files are checked (:mod:`salseg.data.check`): ``on_error``,
  ``check``, ``check_workers``, ``skip_log_dir`` and ``verbose``.

:func:`split_options` routes the flat keys into the records (the one place that knows which key
goes where); an unknown key is refused with :class:`~salseg.data.errors.DataOptionError` naming
``data.<key>`` and the known keys.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from salseg.data.errors import DataOptionError

AUTO_WORKERS_MAX = 4
CHECK_LEVELS = ("full", "header", "none")
ON_ERROR = ("raise", "skip")


def plain(x: Any) -> Any:
    """``x`` with OmegaConf containers turned into plain dicts/lists (resolved)."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(x, DictConfig | ListConfig):
            return OmegaConf.to_container(x, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    return x


def specs(x: Any, key: str = "data.train") -> tuple[dict, ...]:
    """A source-spec value (``None``, one mapping or a list of mappings) as a tuple of dicts."""
    x = plain(x)
    if x is None:
        return ()
    if isinstance(x, Mapping):
        return (dict(x),)
    if isinstance(x, str) or not all(isinstance(s, Mapping) for s in x):
        raise DataOptionError(f"{key}={x!r}: expected a list of source specs such as "
                              f"[{{kind: folder, images: im, masks: gt}}]")
    return tuple(dict(s) for s in x)


def workers_for_machine(requested: int) -> int:
    """``data.num_workers`` sized to the machine: at most one worker per CPU core this process
    may use (torch's DataLoader warns above that; a recipe written for a large machine runs
    unchanged on a laptop)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(0, min(int(requested), cores))


def resolve_num_workers(value: int | str) -> int:
    """``data.num_workers``: an integer, or ``auto`` = min(4, the CPUs this process may use), the
    most DataLoader workers that do not oversubscribe the machine (DataLoader warns above it)."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return max(1, workers_for_machine(AUTO_WORKERS_MAX))
    try:
        workers = int(value)
    except (TypeError, ValueError):
        workers = -1
    if workers < 0 or isinstance(value, bool):
        raise DataOptionError(
            f"data.num_workers must be a non-negative integer or auto, got {value!r}")
    return workers


def _int(key: str, value: Any, minimum: int | None) -> int:
    """``data.<key>`` as an integer >= ``minimum`` (``None``: any; ``4``, ``4.0`` and ``"4"`` are
    4)."""
    try:
        number = int(value)
        integral = not isinstance(value, bool) and (not isinstance(value, float) or number == value)
    except (TypeError, ValueError):
        number, integral = 0, False
    if not integral or minimum is not None and number < minimum:
        kind = {None: "an integer", 0: "a non-negative integer"}.get(minimum, "a positive integer")
        raise DataOptionError(f"data.{key}={value!r}: expected {kind}")
    return number


@dataclass(frozen=True)
class DataSources:
    """Which pairs the datamodule lists, as source specs (:mod:`salseg.data.sources`).

    ``train`` specs are concatenated; ``val`` specs form one validation loader (empty and
    ``val_split > 0``: a seeded hold-out of the training pairs); ``test`` specs give one loader
    each; ``mix`` specs are added to training after the val split; ``monitor`` specs are scored
    during training for information only."""

    train: tuple[dict, ...] = ()
    val: tuple[dict, ...] = ()
    test: tuple[dict, ...] = ()
    mix: tuple[dict, ...] = ()
    monitor: tuple[dict, ...] = ()
    val_split: float = 0.0

    def __post_init__(self) -> None:
        for key in ("train", "val", "test", "mix", "monitor"):
            object.__setattr__(self, key, specs(getattr(self, key), f"data.{key}"))
        try:
            split = float(self.val_split)
        except (TypeError, ValueError):
            split = -1.0
        if isinstance(self.val_split, bool) or not 0.0 <= split < 1.0:
            raise DataOptionError(f"data.val_split={self.val_split!r}: expected a fraction in "
                                  "[0, 1) of the training images to hold out (0: none)")
        object.__setattr__(self, "val_split", split)

    @classmethod
    def from_keys(cls, name: str = "custom", train: Any = None, val: Any = None,
                  test: Any = None, mix: Any = None, monitor: Any = None,
                  images: str | None = None, masks: str | None = None,
                  val_images: str | None = None, val_masks: str | None = None,
                  pairs_file: str | None = None, val_pairs_file: str | None = None,
                  val_split: float = 0.0, offline_hflip: bool | None = None) -> DataSources:
        """The record of the flat ``data.*`` source keys: the folder / list shortcuts become
        specs named ``<name>-train`` / ``<name>-val``, and ``offline_hflip`` (when set) is
        written into every DUTS training spec."""
        train_specs, val_specs = list(specs(train, "data.train")), list(specs(val, "data.val"))
        if images is not None:
            train_specs.append({"kind": "folder", "images": images, "masks": masks,
                                "name": f"{name}-train"})
        if pairs_file is not None:
            train_specs.append({"kind": "list", "file": pairs_file, "name": f"{name}-train"})
        if val_images is not None:
            val_specs.append({"kind": "folder", "images": val_images, "masks": val_masks,
                              "name": f"{name}-val"})
        if val_pairs_file is not None:
            val_specs.append({"kind": "list", "file": val_pairs_file, "name": f"{name}-val"})
        if offline_hflip is not None:
            for spec in train_specs:
                if spec.get("kind") == "duts":
                    spec["offline_hflip"] = bool(offline_hflip)
        return cls(train=tuple(train_specs), val=tuple(val_specs), test=specs(test, "data.test"),
                   mix=specs(mix, "data.mix"), monitor=specs(monitor, "data.monitor"),
                   val_split=val_split)


@dataclass(frozen=True)
class LoaderOptions:
    """How the DataLoaders serve batches.  ``val_batch_size=None`` becomes ``batch_size``,
    ``num_workers`` may be ``auto`` (:func:`resolve_num_workers`), and ``persistent_workers``
    holds only with workers; the record keeps the resolved values."""

    batch_size: int = 12
    val_batch_size: int | None = None
    num_workers: int | str = 0
    persistent_workers: bool = False
    pin_memory: bool = False
    drop_last: bool = True
    seed: int = 0
    gpu_aug: bool = False

    def __post_init__(self) -> None:
        batch = _int("batch_size", self.batch_size, 1)
        val_batch = batch if self.val_batch_size in (None, 0) else \
            _int("val_batch_size", self.val_batch_size, 1)
        workers = resolve_num_workers(self.num_workers)
        for key, value in (("batch_size", batch), ("val_batch_size", val_batch),
                           ("num_workers", workers), ("seed", _int("seed", self.seed, None)),
                           ("persistent_workers", bool(self.persistent_workers) and workers > 0),
                           ("pin_memory", bool(self.pin_memory)),
                           ("drop_last", bool(self.drop_last)), ("gpu_aug", bool(self.gpu_aug))):
            object.__setattr__(self, key, value)


@dataclass(frozen=True)
class CheckPolicy:
    """How listed files are checked (:func:`salseg.data.check.check_pairs`) and what a bad file
    does: ``on_error=raise`` fails with the full list, ``skip`` drops them with a log in
    ``skip_log_dir``; ``verbose`` prints a note for sources with warnings."""

    on_error: str = "raise"
    check: str = "full"
    check_workers: int = 0
    skip_log_dir: str | None = None
    verbose: bool = True

    def __post_init__(self) -> None:
        if self.on_error not in ON_ERROR:
            raise DataOptionError(f"data.on_error must be 'raise' or 'skip', got {self.on_error!r}")
        if self.check not in CHECK_LEVELS:
            raise DataOptionError(f"data.check must be 'full', 'header' or 'none', "
                                  f"got {self.check!r}")
        object.__setattr__(self, "check_workers", _int("check_workers", self.check_workers, 0))
        object.__setattr__(self, "verbose", bool(self.verbose))
        if self.skip_log_dir is not None:
            object.__setattr__(self, "skip_log_dir", str(self.skip_log_dir))


# the flat data.<key> of each record (DataSources' are the keys of DataSources.from_keys)
SOURCE_KEYS = ("train", "val", "test", "mix", "monitor", "images", "masks", "val_images",
               "val_masks", "pairs_file", "val_pairs_file", "val_split", "offline_hflip")
LOADER_KEYS = tuple(f.name for f in dataclasses.fields(LoaderOptions))
CHECK_KEYS = tuple(f.name for f in dataclasses.fields(CheckPolicy))
RECORD_KEYS = {"sources": SOURCE_KEYS, "loader": LOADER_KEYS, "checks": CHECK_KEYS}


@dataclass(frozen=True)
class Options:
    """The three records of one datamodule (what :func:`split_options` returns)."""

    sources: DataSources = field(default_factory=DataSources)
    loader: LoaderOptions = field(default_factory=LoaderOptions)
    checks: CheckPolicy = field(default_factory=CheckPolicy)


def split_options(options: Mapping[str, Any], name: str = "custom",
                  own_keys: tuple[str, ...] = (), *, sources: DataSources | None = None,
                  loader: LoaderOptions | None = None, checks: CheckPolicy | None = None
                  ) -> Options:
    """Route the flat ``data.<key>`` values in ``options`` into :class:`DataSources`,
    :class:`LoaderOptions` and :class:`CheckPolicy` (``name`` names the shortcut specs).

    ``sources`` / ``loader`` / ``checks`` may be ready records (``None``: built from the keys);
    giving a record and one of its keys at once is refused, and so is a key no
    record knows (the message lists the known keys, with ``own_keys``, the caller's own)."""
    records = {"sources": sources, "loader": loader, "checks": checks}
    groups: dict[str, dict[str, Any]] = {record: {} for record in RECORD_KEYS}
    owner = {key: record for record, keys in RECORD_KEYS.items() for key in keys}
    for key, value in options.items():
        if key not in owner:
            known = ", ".join(sorted({*owner, *own_keys}))
            raise DataOptionError(f"data.{key}: unknown data option (known: {known})")
        groups[owner[key]][key] = plain(value)
    for record, kind in (("sources", DataSources), ("loader", LoaderOptions),
                         ("checks", CheckPolicy)):
        given = records[record]
        if given is None:
            continue
        if not isinstance(given, kind):
            raise DataOptionError(f"data.{record}: expected a {kind.__name__}, got "
                                  f"{type(given).__name__} (or give its keys flat: "
                                  f"{', '.join(RECORD_KEYS[record])})")
        if groups[record]:
            keys = ", ".join(f"data.{k}" for k in groups[record])
            raise DataOptionError(f"{keys} given together with a ready {kind.__name__} "
                                  f"({record}=...): give one or the other")
    return Options(
        sources=sources if sources is not None else DataSources.from_keys(name=name,
                                                                         **groups["sources"]),
        loader=loader if loader is not None else LoaderOptions(**groups["loader"]),
        checks=checks if checks is not None else CheckPolicy(**groups["checks"]),
    )


__all__ = ["AUTO_WORKERS_MAX", "CheckPolicy", "DataSources", "LoaderOptions", "Options",
           "RECORD_KEYS", "plain", "resolve_num_workers", "specs", "split_options",
           "workers_for_machine"]
