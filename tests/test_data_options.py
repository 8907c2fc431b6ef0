"""The datamodule's option records (salseg.data.options): every key of every data config lands in
its record with its value, non-default values of every key are routed, and an unknown
``data.<key>`` is refused by name through ``salseg-train``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import OmegaConf
from train_helpers import run_train_cli, tiny_data_overrides

from salseg.config import CONFIG_DIR
from salseg.data.datamodule import OWN_KEYS, SegDataModule
from salseg.data.errors import DataOptionError
from salseg.data.options import (
    RECORD_KEYS,
    CheckPolicy,
    DataSources,
    LoaderOptions,
    resolve_num_workers,
)
from salseg.data.sources import resolve_root

DATA_CONFIGS = sorted(p.stem for p in (Path(CONFIG_DIR) / "data").glob("*.yaml"))
SHORTCUTS = {"images": ("train", "images"), "masks": ("train", "masks"),
             "val_images": ("val", "images"), "val_masks": ("val", "masks"),
             "pairs_file": ("train", "file"), "val_pairs_file": ("val", "file")}


def _train_config(*overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides))
    GlobalHydra.instance().clear()
    return cfg


def _expected_loader(keys: dict[str, Any]) -> dict[str, Any]:
    """What LoaderOptions keeps of the configured values (the documented resolutions)."""
    out = dict(keys)
    out["val_batch_size"] = keys["val_batch_size"] or keys["batch_size"]
    out["num_workers"] = resolve_num_workers(keys["num_workers"])
    out["persistent_workers"] = bool(keys["persistent_workers"]) and out["num_workers"] > 0
    return out


def check_landed(dm: SegDataModule, data: dict[str, Any], aug_name: str | None) -> set[str]:
    """Assert that every key of the data config ``data`` is where it belongs in ``dm``; return
    the keys checked (every key must have a rule here, so a new key cannot go unchecked)."""
    checked: set[str] = set()
    loader = _expected_loader({k: data[k] if k in data else _default(LoaderOptions, k)
                               for k in RECORD_KEYS["loader"]})
    for key, value in data.items():
        if key == "_target_":
            assert value == "salseg.data.datamodule.SegDataModule"
        elif key in RECORD_KEYS["loader"]:
            assert getattr(dm.loader, key) == loader[key], key
        elif key in RECORD_KEYS["checks"]:
            assert getattr(dm.checks, key) == value, key
        elif key in ("train", "val", "test", "mix", "monitor"):
            got = list(getattr(dm.sources, key))
            for spec in value:
                if key == "train" and spec.get("kind") == "duts" and data.get("offline_hflip") is not None:
                    spec = {**spec, "offline_hflip": bool(data["offline_hflip"])}
                assert spec in got, (key, spec, got)
        elif key in SHORTCUTS:
            split, field = SHORTCUTS[key]
            if value is not None:
                assert any(s.get(field) == value for s in getattr(dm.sources, split)), key
        elif key == "val_split":
            assert dm.sources.val_split == float(value)
        elif key == "offline_hflip":
            duts = [s for s in dm.sources.train if s.get("kind") == "duts"]
            if value is not None:
                assert all(s["offline_hflip"] is bool(value) for s in duts), duts
        elif key == "root":
            assert dm.root == resolve_root(value)
        elif key == "aug":
            assert value is None or dm.recipe.name == aug_name
        elif key == "default_aug":
            assert data.get("aug") is not None or dm.recipe.name == value
        elif key == "synthetic":
            assert dm.synthetic == dict(value or {})
        elif key == "cache":
            assert dm.cache_cfg == dict(value or {})
        elif key in ("name", "convention", "mask_only", "alpha"):
            assert getattr(dm, key) == value, key
        else:
            raise AssertionError(f"data.{key} has no rule in this test: add one")
        checked.add(key)
    return checked


def _default(record: type, key: str) -> Any:
    return {f.name: f.default for f in record.__dataclass_fields__.values()}[key]


@pytest.mark.parametrize("name", DATA_CONFIGS)
def test_every_key_of_every_data_config_lands_in_its_record(name, tmp_path):
    cfg = _train_config(f"data={name}", f"data.root={tmp_path}")
    data = OmegaConf.to_container(cfg.data, resolve=True)
    dm = instantiate(cfg.data)
    checked = check_landed(dm, data, cfg.aug.name)
    assert checked == set(data)
    assert set(data) - {"_target_"} <= set(OWN_KEYS) | {k for ks in RECORD_KEYS.values() for k in ks}
    # train.yaml always sets an aug group; without one the data set's default_aug is the recipe
    assert instantiate(cfg.data, aug=None).recipe.name == data["default_aug"]


NON_DEFAULT = {
    # LoaderOptions
    "batch_size": 3, "val_batch_size": 5, "num_workers": 1, "persistent_workers": True,
    "pin_memory": True, "drop_last": False, "seed": 7, "gpu_aug": True,
    # CheckPolicy
    "on_error": "skip", "check": "header", "check_workers": 2, "skip_log_dir": "skips",
    "verbose": False,
    # DataSources
    "train": [{"kind": "duts", "split": "train"}], "val": [{"kind": "synthetic", "split": "val"}],
    "test": [{"kind": "saliency", "name": "ECSSD"}, {"kind": "saliency", "name": "SOD"}],
    "mix": [{"kind": "synthetic", "split": "train", "fraction": 0.5}],
    "monitor": [{"kind": "duts", "split": "test", "name": "DUTS-TE"}],
    "images": "im", "masks": "gt", "val_images": "vim", "val_masks": "vgt", "pairs_file": "tr.txt",
    "val_pairs_file": "va.txt", "val_split": 0.2, "offline_hflip": True,
    # the datamodule's own
    "name": "mine", "convention": "dis", "mask_only": True, "alpha": "white",
    "synthetic": {"n_train": 3}, "cache": {"enabled": True, "dir": "c"},
    "default_aug": "u2net_paper", "aug": "isnet_paper",  # aug: the group (data.aug follows it)
}


def _hydra_value(value: Any) -> str:
    """``value`` in Hydra's override grammar."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_hydra_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_hydra_value(v) for v in value) + "]"
    return str(value)


def test_non_default_values_of_every_key_are_routed(tmp_path):
    """A key dropped on the way would keep its default: every key here differs from it."""
    known = set(OWN_KEYS) | {k for ks in RECORD_KEYS.values() for k in ks}
    assert set(NON_DEFAULT) | {"root"} == known  # root: tmp_path below
    for record, cls in (("loader", LoaderOptions), ("checks", CheckPolicy)):
        for key in RECORD_KEYS[record]:
            assert NON_DEFAULT[key] != _default(cls, key), key
    overrides = [f"data.root={tmp_path}", f"aug={NON_DEFAULT['aug']}"]
    overrides += [f"++data.{key}={_hydra_value(value)}" for key, value in NON_DEFAULT.items()
                  if key != "aug"]
    cfg = _train_config("data=custom", *overrides)
    data = OmegaConf.to_container(cfg.data, resolve=True)
    assert {k: data[k] for k in NON_DEFAULT if k != "aug"} == \
        {k: v for k, v in NON_DEFAULT.items() if k != "aug"}
    dm = instantiate(cfg.data)
    assert check_landed(dm, data, cfg.aug.name) == set(data)
    assert dm.recipe.name == "isnet_paper"
    # the shortcuts become specs named after the data set, after the listed ones
    assert dm.sources.train[-2:] == (
        {"kind": "folder", "images": "im", "masks": "gt", "name": "mine-train"},
        {"kind": "list", "file": "tr.txt", "name": "mine-train"})
    assert dm.sources.val[-2:] == (
        {"kind": "folder", "images": "vim", "masks": "vgt", "name": "mine-val"},
        {"kind": "list", "file": "va.txt", "name": "mine-val"})
    assert dm.sources.train[0] == {"kind": "duts", "split": "train", "offline_hflip": True}
    assert len(dm.sources.test) == 2


def test_python_callers_give_flat_keys_or_records(tmp_path):
    flat = SegDataModule(name="x", root=str(tmp_path), images="im", masks="gt", batch_size=4,
                         check="header")
    records = SegDataModule(name="x", root=str(tmp_path),
                            sources=DataSources.from_keys(name="x", images="im", masks="gt"),
                            loader=LoaderOptions(batch_size=4), checks=CheckPolicy(check="header"))
    assert (flat.sources, flat.loader, flat.checks) == (records.sources, records.loader,
                                                       records.checks)
    assert flat.loader.val_batch_size == 4 and flat.sources.train[0]["name"] == "x-train"
    with pytest.raises(DataOptionError, match=r"data\.batch_size given together"):
        SegDataModule(root=str(tmp_path), loader=LoaderOptions(), batch_size=4)
    with pytest.raises(DataOptionError, match="expected a LoaderOptions"):
        SegDataModule(root=str(tmp_path), loader={"batch_size": 4})


@pytest.mark.parametrize("record, key, value, message", [
    (LoaderOptions, "batch_size", 0, r"data\.batch_size=0: expected a positive integer"),
    (LoaderOptions, "batch_size", 2.5, r"data\.batch_size=2\.5"),
    (LoaderOptions, "num_workers", "many", r"data\.num_workers must be"),
    (LoaderOptions, "seed", "x", r"data\.seed='x'"),
    (CheckPolicy, "on_error", "ignore", r"data\.on_error must be 'raise' or 'skip'"),
    (CheckPolicy, "check", "fast", r"data\.check must be 'full', 'header' or 'none'"),
    (CheckPolicy, "check_workers", -1, r"data\.check_workers=-1"),
    (DataSources, "val_split", 1.5, r"data\.val_split=1\.5"),
    (DataSources, "train", "im", r"data\.train='im': expected a list of source specs"),
])
def test_each_record_validates_its_values(record, key, value, message):
    with pytest.raises(DataOptionError, match=message):
        record(**{key: value})


def test_unknown_data_key_is_refused_by_name_through_salseg_train(tmp_path, monkeypatch):
    """``+data.bogus=1`` ended in a TypeError traceback from deep inside Hydra's instantiate;
    it is one error line naming ``data.bogus`` and the known keys, exit code 2."""
    code, err = run_train_cli(
        ["model=u2netp", "trainer=cpu", "trainer.max_steps=1", "logger=none",
         *tiny_data_overrides(tmp_path / "data", size=32, n_train=4, n_val=2, batch_size=2),
         "+data.bogus=1", f"hydra.run.dir={tmp_path / 'run'}"], monkeypatch)
    assert code == 2, err
    assert "salseg-train: error: data.bogus: unknown data option" in err, err
    assert "batch_size" in err and "val_split" in err and "on_error" in err, err
    assert "Traceback" not in err
