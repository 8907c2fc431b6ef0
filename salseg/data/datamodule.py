"""``SegDataModule``: the LightningDataModule behind every ``configs/data/*.yaml``.

Hydra instantiates it from a data config (``_target_: salseg.data.datamodule.SegDataModule``).
It lists the configured sources (:mod:`salseg.data.sources`), validates them
(:mod:`salseg.data.check`, strict by default, ``on_error=skip`` to drop bad files with a log),
builds the recipe (``aug``; :mod:`salseg.data.transforms`) and serves batches following the
contract in :mod:`salseg.data.datasets`.

Its options come in three records (:mod:`salseg.data.options`), built from the flat ``data.<key>``
config keys by :func:`~salseg.data.options.split_options` (an unknown key is refused by name):
``sources`` (:class:`~salseg.data.options.DataSources`), ``loader``
(:class:`~salseg.data.options.LoaderOptions`) and ``checks``
(:class:`~salseg.data.options.CheckPolicy`).  Python callers may pass the flat keys
(``SegDataModule(name="x", images="im", masks="gt", batch_size=4)``) or ready records.

Splits (``sources``):
* ``train``: list of source specs (concatenated).
* ``val``: list of source specs (concatenated into one loader); if empty and ``val_split > 0``,
  a seeded random fraction of the training pairs is held out (virtual flips of a held-out
  pair go with it).
* ``test``: list of source specs; **one dataloader per spec** (``test_names`` gives their
  names), so an evaluation can sweep several sets.
* ``monitor``: source specs scored during training for information only (e.g. DUTS-TE in the
  U2-Net recipes): served as extra validation loaders after ``val`` and logged as
  ``test_monitor/<name>/...`` (``val_loader_prefixes``); they never drive checkpoint
  selection or early stopping.
* ``offline_hflip``: sets the option of every DUTS training source (virtual flip doubling).
* ``mix``: extra training sources added after the val split (e.g. a fraction of DUTS-TR while
  fine-tuning on a small custom set); any source spec may carry ``fraction: 0.2`` to use a seeded
  random fraction of its pairs.
* Custom shortcut: ``images``/``masks`` (+ optional ``val_images``/``val_masks``) or
  ``pairs_file`` (+ ``val_pairs_file``) instead of ``train``/``val``.

The datamodule's own keys: ``name``; ``root`` (the data root); ``aug`` / ``default_aug`` (the
recipe); ``convention`` (``u2net`` or ``dis``: which paper's evaluation convention the data set
is scored with; the evaluation code reads it); ``mask_only=True``, the masks-only mode of IS-Net
phase 1 (the GT encoder; OFFICIAL_NOTES §3.2): masks are served as inputs, validation is on the
training masks (``val_pairs`` = ``train_pairs``) and no monitor set is scored; ``alpha`` (RGBA
images); ``synthetic`` (the generated set's parameters); ``cache`` (the uint8 resize cache).
``loader.gpu_aug`` ships uint8 training batches and augments them on the training device
(:mod:`salseg.data.gpu_aug`, in ``on_after_batch_transfer``).
"""
from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from salseg.data.check import apply_policy, check_pairs
from salseg.data.datasets import SegDataset, collate_seg, seed_worker
from salseg.data.errors import DataLayoutError, DataOptionError
from salseg.data.options import (
    CheckPolicy,
    DataSources,
    LoaderOptions,
    plain,
    split_options,
    workers_for_machine,
)
from salseg.data.samplers import EpochShuffleSampler
from salseg.data.sources import ROOT_ENV_VAR, Pair, list_source, resolve_root
from salseg.data.transforms import Recipe, build_recipe
from salseg.metrics.conventions import CONVENTION_RECORDS, DEFAULT_CONVENTION


def subsample(pairs: list[Pair], fraction: float, seed: int, name: str) -> list[Pair]:
    """A seeded random ``fraction`` of ``pairs`` (source spec key ``fraction``), order kept."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"data source '{name}': fraction must be in (0, 1], got {fraction}")
    n = max(1, int(round(len(pairs) * fraction))) if pairs else 0
    keep = set(np.random.default_rng(seed).permutation(len(pairs))[:n].tolist())
    return [p for i, p in enumerate(pairs) if i in keep]


# the datamodule's own data.<key> (the records' keys: salseg.data.options.RECORD_KEYS)
OWN_KEYS = ("name", "root", "aug", "default_aug", "convention", "mask_only", "alpha", "synthetic",
            "cache")


class SegDataModule(L.LightningDataModule):
    """Sources + validation + recipe -> train / val / test dataloaders."""

    def __init__(
        self,
        name: str = "custom",
        root: str | None = None,
        *,
        aug: Mapping | str | Recipe | None = None,
        default_aug: str = "u2net_paper",
        convention: str = DEFAULT_CONVENTION,
        mask_only: bool = False,
        alpha: str = "drop",
        synthetic: Mapping | None = None,
        cache: Mapping | None = None,
        sources: DataSources | None = None,
        loader: LoaderOptions | None = None,
        checks: CheckPolicy | None = None,
        **options: Any,
    ) -> None:
        """``options``: the flat ``data.<key>`` values of the three records (``batch_size=4``,
        ``images="im"``, ``on_error="skip"``, ...; :func:`~salseg.data.options.split_options`),
        or give ready records as ``sources`` / ``loader`` / ``checks``."""
        super().__init__()
        split = split_options(options, name=name, own_keys=OWN_KEYS, sources=sources,
                              loader=loader, checks=checks)
        self.sources, self.loader, self.checks = split.sources, split.loader, split.checks
        if convention not in CONVENTION_RECORDS:
            raise DataOptionError(f"data.convention must be one of {sorted(CONVENTION_RECORDS)}, "
                                  f"got {convention!r}")
        self.name = name
        self.root = resolve_root(root)
        explicit_root = root not in (None, "") or bool(os.environ.get(ROOT_ENV_VAR))
        if explicit_root and not self.root.is_dir():
            # only the project default (./data) is created on demand (synthetic set)
            given = root if root not in (None, "") else f"${ROOT_ENV_VAR}={os.environ[ROOT_ENV_VAR]}"
            raise DataLayoutError(
                f"data.root={given}: folder does not exist (create it, fix the path, or leave "
                f"data.root unset to use the project's ./data)", self.root)
        self.recipe = build_recipe(plain(aug), default=default_aug)
        self.mask_only = bool(mask_only)
        self.alpha = alpha
        self.convention = convention
        self.synthetic = dict(plain(synthetic) or {})
        self.cache_cfg = dict(plain(cache) or {})
        self._device_augment = None
        if self.loader.gpu_aug:
            from salseg.data.gpu_aug import check_recipe

            check_recipe(self.recipe)
        self.train_pairs: list[Pair] | None = None
        self.val_pairs: list[Pair] | None = None
        self.test_sets: list[tuple[str, list[Pair]]] | None = None
        self.monitor_sets: list[tuple[str, list[Pair]]] | None = None
        self.reports: dict[str, Any] = {}
        self._cache = None

    # ------------------------------------------------------------------ listing + checking

    def _pairs(self, specs: Sequence[Mapping], label: str) -> list[Pair]:
        pairs: list[Pair] = []
        for spec in specs:
            spec = dict(spec)
            fraction = spec.pop("fraction", None)
            listing = list_source(spec, self.root, self.synthetic)
            name = spec.get("name") or listing.name or label
            report = check_pairs(listing.pairs, name=name, listing=listing, level=self.checks.check,
                                 workers=self.checks.check_workers)
            self.reports[name] = report
            usable = apply_policy(report, self.checks.on_error, self.checks.skip_log_dir)
            if fraction is not None:
                usable = subsample(usable, float(fraction), self.loader.seed, name)
            pairs.extend(usable)
            if self.checks.verbose and report.issues and not report.errors:
                notes = report.counts()
                msg = ", ".join(f"{k}={v}" for k, v in sorted(notes.items()))
                print(f"[salseg] data '{name}': {len(report.ok_pairs)} pairs ({msg})",
                      file=sys.stderr)
        return pairs

    def _split(self, pairs: list[Pair]) -> tuple[list[Pair], list[Pair]]:
        files = sorted({p.image for p in pairs})
        n_val = int(round(len(files) * self.sources.val_split))
        if self.sources.val_split > 0 and n_val == 0 and len(files) > 1:
            n_val = 1
        rng = np.random.default_rng(self.loader.seed)
        held = {files[i] for i in rng.permutation(len(files))[:n_val]}
        train = [p for p in pairs if p.image not in held]
        val = [p for p in pairs if p.image in held and not p.hflip]  # no virtual flips in val
        return train, val

    def source_specs(self) -> list[tuple[str, dict]]:
        """Every source of this datamodule as ``(split, spec)``: train, val, test and mix, with
        the folder/list shortcuts and ``offline_hflip`` already expanded (what ``setup`` lists)."""
        return [(split, dict(spec)) for split, specs in (
            ("train", self.sources.train), ("val", self.sources.val),
            ("test", self.sources.test), ("mix", self.sources.mix)) for spec in specs]

    def evaluation_sets(self) -> list[tuple[str, list[Pair]]]:
        """The sets a model is scored on: the test sets (else the validation sources); a config
        with neither (e.g. ``data=custom``) scores every listed pair (train + val, no virtual
        flips) as one set named after the config."""
        self.setup("test")
        sets = list(self.test_sets or [])
        if not sets:
            self.setup("fit")
            pairs = list(self.train_pairs or []) + list(self.val_pairs or [])
            pairs = [p for p in pairs if not p.hflip]
            if pairs:
                sets = [(str(self.name), pairs)]
        return sets

    def prepare_data(self) -> None:
        """Generate the synthetic set when configured (idempotent, atomic)."""
        for spec in self.sources.train + self.sources.val + self.sources.test:
            if spec.get("kind") == "synthetic":
                list_source(spec, self.root, self.synthetic)

    def setup(self, stage: str | None = None) -> None:
        src = self.sources
        if stage in (None, "fit", "validate"):
            if (stage in (None, "fit") or self.mask_only) and self.train_pairs is None:
                if not src.train:
                    raise DataLayoutError(
                        f"data '{self.name}' has no training source: set data.images=FOLDER "
                        "data.masks=FOLDER (or data.pairs_file=LIST, or data.train=[...])")
                train = self._pairs(src.train, "train")
                if not src.val and src.val_split > 0:
                    train, self.val_pairs = self._split(train)
                if src.mix:  # mixed in after the val split: never held out
                    train = train + self._pairs(src.mix, "mix")
                self.train_pairs = train
            if self.mask_only:  # the GT encoder is validated on its training masks, nothing else
                self.val_pairs = list(self.train_pairs or [])
                self.monitor_sets = []
            if self.val_pairs is None:
                if src.val:
                    self.val_pairs = self._pairs(src.val, "val")
                elif stage == "validate" and src.val_split > 0 and src.train:
                    _, self.val_pairs = self._split(self._pairs(src.train, "train"))
                else:
                    self.val_pairs = []
            if self.monitor_sets is None:
                self.monitor_sets = []
                for spec in src.monitor:
                    pairs = self._pairs([spec], "monitor")
                    name = spec.get("name") or (pairs[0].source if pairs else str(spec.get("kind")))
                    self.monitor_sets.append((name, [p for p in pairs if not p.hflip]))
        if stage in (None, "test", "predict") and self.test_sets is None:
            specs = src.test or src.val
            test_sets, missing = [], []
            for spec in specs:
                try:
                    pairs = self._pairs([spec], "test")
                except DataLayoutError as err:  # name every missing set at once, below
                    missing.append((str(spec.get("name") or spec.get("split") or spec.get("kind")),
                                    err))
                    continue
                name = spec.get("name") or (pairs[0].source if pairs else str(spec.get("kind")))
                test_sets.append((name, pairs))
            if missing:
                raise missing_sets_error(missing, len(specs))
            self.test_sets = test_sets

    # ------------------------------------------------------------------ datasets + loaders

    @property
    def cache(self):
        if self._cache is None and self.cache_cfg.get("enabled"):
            from salseg.data.cache import ResizeCache

            self._cache = ResizeCache(
                self.cache_cfg.get("dir") or (self.root / ".salseg_cache"),
                truncate=self.recipe.truncate_uint8,
                image_interpolation=self.recipe.image_interpolation,
                mask_interpolation=self.recipe.mask_interpolation,
                alpha=self.alpha,
            )
        return self._cache

    def make_dataset(self, pairs: Sequence[Pair], train: bool) -> SegDataset:
        if train and self.loader.gpu_aug:
            from salseg.data.gpu_aug import RawSegDataset

            return RawSegDataset(pairs, self.recipe, train=True, mask_only=self.mask_only,
                                 alpha=self.alpha, cache=self.cache, seed=self.loader.seed)
        return SegDataset(pairs, self.recipe, train=train, mask_only=self.mask_only,
                          alpha=self.alpha, cache=self.cache, seed=self.loader.seed)

    def _loader(self, ds: SegDataset, train: bool) -> DataLoader:
        # training order, worker seeds and in-process augmentation are a function of
        # (seed, epoch) through EpochShuffleSampler (Lightning calls set_epoch every epoch)
        opts = self.loader
        rank = self.trainer.global_rank if getattr(self, "trainer", None) is not None else 0
        sampler = EpochShuffleSampler(ds, opts.seed, rank=rank) if train else None
        g = sampler.generator if sampler is not None else torch.Generator()
        if sampler is None:
            g.manual_seed(opts.seed)
        return DataLoader(
            ds,
            batch_size=opts.batch_size if train else opts.val_batch_size,
            shuffle=False,
            sampler=sampler,
            drop_last=train and opts.drop_last and len(ds) >= opts.batch_size,
            num_workers=workers_for_machine(opts.num_workers),
            persistent_workers=opts.persistent_workers,
            pin_memory=opts.pin_memory,
            collate_fn=self._collate(ds),
            worker_init_fn=seed_worker,
            generator=g,
        )

    @staticmethod
    def _collate(ds: SegDataset):
        from salseg.data.gpu_aug import RawSegDataset, collate_raw

        return collate_raw if isinstance(ds, RawSegDataset) else collate_seg

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """``gpu_aug``: augment the raw uint8 training batch on its device."""
        if not (isinstance(batch, dict) and batch.get("raw")):
            return batch
        from salseg.data.gpu_aug import DeviceAugment, augment_batch

        if self._device_augment is None:
            trainer = getattr(self, "trainer", None)
            rank = trainer.global_rank if trainer is not None else 0
            self._device_augment = DeviceAugment(self.recipe, seed=self.loader.seed, rank=rank)
        return augment_batch(self._device_augment, batch, self.mask_only)

    def train_dataloader(self) -> DataLoader:
        if self.train_pairs is None:
            self.setup("fit")
        assert self.train_pairs is not None
        if not self.train_pairs:
            raise ValueError(f"data '{self.name}': no usable training pairs")
        return self._loader(self.make_dataset(self.train_pairs, True), True)

    def val_dataloader(self) -> DataLoader | list:
        """The ``val`` loader (if any) followed by one loader per ``monitor`` set; their log
        prefixes are :attr:`val_loader_prefixes`."""
        if self.val_pairs is None or self.monitor_sets is None:
            self.setup("validate")
        loaders = [self._loader(self.make_dataset(self.val_pairs, False), False)] if self.val_pairs else []
        loaders += [self._loader(self.make_dataset(p, False), False) for _, p in self.monitor_sets or []]
        if len(loaders) <= 1:
            return loaders[0] if loaders else []
        return loaders

    @property
    def val_loader_prefixes(self) -> list[str]:
        """Metric prefix of each validation loader: ``val`` (selection data) first, then
        ``test_monitor/<name>`` (information only)."""
        if self.val_pairs is None or self.monitor_sets is None:
            self.setup("validate")
        return ((["val"] if self.val_pairs else [])
                + [f"test_monitor/{name}" for name, _ in self.monitor_sets or []])

    def test_dataloader(self) -> list[DataLoader]:
        if self.test_sets is None:
            self.setup("test")
        assert self.test_sets is not None
        return [self._loader(self.make_dataset(p, False), False) for _, p in self.test_sets]

    @property
    def test_names(self) -> list[str]:
        if self.test_sets is None:
            self.setup("test")
        return [n for n, _ in self.test_sets or []]

    @property
    def input_size(self) -> tuple[int, int]:
        """Spatial size of evaluation batches (the model input size)."""
        return self.recipe.input_size

    def describe(self) -> str:
        r = self.recipe
        return (f"data={self.name} root={Path(self.root)} recipe={r.name} size={list(r.size)} "
                f"crop={None if r.crop is None else list(r.crop)} flip={r.flip} "
                f"convention={self.convention}")


def missing_sets_error(missing: list[tuple[str, DataLayoutError]], total: int) -> DataLayoutError:
    """One error naming every test set that was not found (``missing``: name, error)."""
    if len(missing) == 1:
        return missing[0][1]
    names = ", ".join(name for name, _ in missing)
    details = "".join(f"\n  - {name}: {err}" for name, err in missing)
    return DataLayoutError(f"{len(missing)} of {total} test sets not found ({names}):{details}")


def data_config(overrides: Sequence[str]) -> SegDataModule:
    """The datamodule of ``configs/data/<name>.yaml`` composed with ``overrides``
    (``["data=duts", "data.root=..."]``), without listing or checking anything yet."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from salseg.config import CONFIG_DIR

    ov = ["+" + o if o.startswith("data=") else o for o in overrides]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        cfg = compose(config_name=None, overrides=ov)
    return instantiate(cfg.data, verbose=False)
