"""SegDataModule: Hydra configs, batch contract, splits, flips, mask_only, strict/skip, workers."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from PIL import Image
from test_data_helpers import (  # noqa: F401 (autouse fixture)
    isolated_cache,
    make_pairs,
)

from salseg.data.datamodule import SegDataModule
from salseg.data.errors import DataCheckError, DataLayoutError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DATA_CONFIGS = sorted(p.stem for p in (CONFIGS / "data").glob("*.yaml"))
SMALL = {"name": "u2net_paper", "size": 64, "crop": 56}


def _compose(*overrides):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        return compose(config_name=None, overrides=list(overrides))


def test_all_required_configs_exist():
    required = {"duts", "duts_te", "dutomron", "hkuis", "ecssd", "pascals", "sod", "dis5k",
                "dis_vd", "dis_te1", "dis_te2", "dis_te3", "dis_te4", "custom", "synthetic"}
    assert required <= set(DATA_CONFIGS)
    assert {p.stem for p in (CONFIGS / "aug").glob("*.yaml")} == {
        "u2net_paper", "isnet_paper", "birefnet_paper", "strong"}


@pytest.mark.parametrize("name", DATA_CONFIGS)
def test_every_data_config_instantiates(name, tmp_path):
    cfg = _compose(f"+data={name}", f"data.root={tmp_path}")
    dm = instantiate(cfg.data)
    assert isinstance(dm, SegDataModule)
    assert dm.convention == ("dis" if name.startswith("dis") or name == "synthetic_dis" else "u2net")
    assert dm.recipe.name == cfg.data.default_aug  # no aug group -> the data set's paper recipe


@pytest.mark.parametrize("aug", ["u2net_paper", "isnet_paper", "strong"])
def test_aug_group_reaches_the_datamodule(aug, tmp_path):
    cfg = _compose("+data=synthetic", f"+aug={aug}", "aug.size=64", f"data.root={tmp_path}",
                   *(["aug.crop=56"] if aug == "u2net_paper" else []))
    dm = instantiate(cfg.data)
    assert dm.recipe.name == aug and dm.recipe.size == (64, 64)


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    return tmp_path_factory.mktemp("synth_root")


def _synth_dm(root, **kw):
    args = dict(name="synthetic", root=str(root), train=[{"kind": "synthetic", "split": "train"}],
                val=[{"kind": "synthetic", "split": "val"}], aug=SMALL, batch_size=4,
                synthetic={"n_train": 12, "n_val": 5, "size": 80}, verbose=False)
    args.update(kw)
    return SegDataModule(**args)


def test_batch_contract_train_and_val(synth_root):
    dm = _synth_dm(synth_root)
    dm.prepare_data()
    dm.setup("fit")
    b = next(iter(dm.train_dataloader()))
    assert set(b) == {"image", "mask", "path"}
    assert b["image"].shape == (4, 3, 56, 56) and b["image"].dtype == torch.float32
    assert b["mask"].shape == (4, 1, 56, 56) and 0 <= b["mask"].min() and b["mask"].max() <= 1
    assert isinstance(b["path"], list) and len(b["path"]) == 4 and Path(b["path"][0]).is_file()
    v = next(iter(dm.val_dataloader()))
    assert {"image", "mask", "path", "gt", "size", "image_path", "mask_path", "name"} <= set(v)
    assert v["image"].shape == (4, 3, 64, 64) and v["mask"].shape == (4, 1, 64, 64)
    assert isinstance(v["gt"], list) and v["gt"][0].shape == (1, 80, 80)
    assert v["size"].dtype == torch.long and v["size"].tolist()[0] == [80, 80]
    gt0 = np.asarray(Image.open(v["mask_path"][0]), dtype=np.float32) / 255
    np.testing.assert_allclose(v["gt"][0][0].numpy(), gt0)
    assert len(dm.val_dataloader().dataset) == 5


def test_seeded_batches_are_reproducible(synth_root):
    def first(seed):
        dm = _synth_dm(synth_root, seed=seed)
        dm.setup("fit")
        return next(iter(dm.train_dataloader()))

    a, b, c = first(1), first(1), first(2)
    assert a["path"] == b["path"] and torch.equal(a["image"], b["image"])
    assert a["path"] != c["path"] or not torch.equal(a["image"], c["image"])


def test_workers_and_persistent_workers(synth_root):
    dm = _synth_dm(synth_root, num_workers=2, persistent_workers=True, pin_memory=False)
    dm.setup("fit")
    dl = dm.train_dataloader()
    assert dl.persistent_workers and dl.num_workers == 2
    batches = list(dl)
    assert len(batches) == 3 and batches[0]["image"].shape == (4, 3, 56, 56)
    # workers are seeded from torch's per-worker seed: two workers' first samples differ in
    # their augmentation streams, and a rerun with the same torch seed is identical
    torch.manual_seed(0)
    x1 = [b["mask"].sum().item() for b in _synth_dm(synth_root, num_workers=2).train_dataloader()]
    torch.manual_seed(0)
    x2 = [b["mask"].sum().item() for b in _synth_dm(synth_root, num_workers=2).train_dataloader()]
    assert x1 == x2


def test_mask_only_mode(synth_root):
    dm = _synth_dm(synth_root, mask_only=True)
    dm.setup("fit")
    b = next(iter(dm.train_dataloader()))
    assert b["image"].shape == (4, 1, 56, 56) and torch.equal(b["image"], b["mask"])


def test_mask_only_mode_validates_on_the_training_masks(synth_root):
    """IS-Net phase 1 (official get_gt_encoder): the masks-only mode validates on the training
    masks, not on data.val, and scores no monitor set; no caller edits the datamodule."""
    dm = _synth_dm(synth_root, mask_only=True, monitor=[{"kind": "synthetic", "split": "val",
                                                          "name": "mon"}])
    dm.setup("validate")  # a validate-only run lists the training masks too
    assert len(dm.train_pairs) == 12 and dm.val_pairs == dm.train_pairs
    assert dm.monitor_sets == [] and dm.val_loader_prefixes == ["val"]
    b = next(iter(dm.val_dataloader()))
    assert b["image"].shape[1] == 1 and b["mask"].shape[1] == 1
    plain = _synth_dm(synth_root, monitor=[{"kind": "synthetic", "split": "val", "name": "mon"}])
    plain.setup("fit")
    assert len(plain.val_pairs) == 5 and [n for n, _ in plain.monitor_sets] == ["mon"]


def test_test_sets_one_loader_each(tmp_path):
    for split in ("DIS-TE1", "DIS-TE2"):
        make_pairs(tmp_path / "DIS5K" / split / "im", tmp_path / "DIS5K" / split / "gt", n=2)
    dm = SegDataModule(name="x", root=str(tmp_path), convention="dis", aug={"name": "isnet_paper",
                       "size": 32}, test=[{"kind": "dis5k", "split": "DIS-TE1"},
                                          {"kind": "dis5k", "split": "DIS-TE2"}], batch_size=2,
                       verbose=False)
    dm.setup("test")
    loaders = dm.test_dataloader()
    assert dm.test_names == ["DIS-TE1", "DIS-TE2"] and len(loaders) == 2
    b = next(iter(loaders[1]))
    assert b["image"].shape == (2, 3, 32, 32) and b["gt"][0].shape == (1, 48, 64)


def test_custom_folders_with_seeded_val_split(tmp_path):
    make_pairs(tmp_path / "im", tmp_path / "gt", n=10)
    kw = dict(name="custom", root=str(tmp_path), images="im", masks="gt", val_split=0.3,
              aug={"name": "strong", "size": 32}, batch_size=2, verbose=False)
    dm = SegDataModule(seed=3, **kw)
    dm.setup("fit")
    assert len(dm.train_pairs) == 7 and len(dm.val_pairs) == 3
    assert not {p.image for p in dm.train_pairs} & {p.image for p in dm.val_pairs}
    dm2 = SegDataModule(seed=3, **kw)
    dm2.setup("fit")
    assert [p.stem for p in dm2.val_pairs] == [p.stem for p in dm.val_pairs]
    dm3 = SegDataModule(seed=4, **kw)
    dm3.setup("fit")
    assert [p.stem for p in dm3.val_pairs] != [p.stem for p in dm.val_pairs]


def test_custom_separate_val_folder_and_pairs_file(tmp_path):
    make_pairs(tmp_path / "tr" / "im", tmp_path / "tr" / "gt", n=4)
    make_pairs(tmp_path / "va" / "im", tmp_path / "va" / "gt", n=2, prefix="v")
    lst = tmp_path / "train.txt"
    lst.write_text("".join(f"tr/im/s00{i}.jpg\ttr/gt/s00{i}.png\n" for i in range(3)))
    dm = SegDataModule(name="custom", root=str(tmp_path), pairs_file=str(lst), val_images="va/im",
                       val_masks="va/gt", val_split=0.5, aug={"name": "strong", "size": 32},
                       batch_size=2, verbose=False)
    dm.setup("fit")
    assert len(dm.train_pairs) == 3 and [p.stem for p in dm.val_pairs] == ["v000", "v001"]


def test_duts_offline_hflip_serves_flipped_pairs(tmp_path):
    base = tmp_path / "DUTS" / "DUTS-TR"
    make_pairs(base / "DUTS-TR-Image", base / "DUTS-TR-Mask", n=2, h=16, w=24, im_ext=".png")
    # an asymmetric mask so that the flip is visible
    m = np.zeros((16, 24), np.uint8)
    m[:, :6] = 255
    Image.fromarray(m).save(base / "DUTS-TR-Mask" / "s000.png")
    dm = SegDataModule(name="duts", root=str(tmp_path), train=[{"kind": "duts", "split": "train"}],
                       offline_hflip=True, aug={"name": "isnet_paper", "size": [16, 24],
                                                "flip": "none", "truncate_uint8": False},
                       batch_size=1, verbose=False)
    dm.setup("fit")
    assert len(dm.train_pairs) == 4
    ds = dm.train_dataloader().dataset
    idx = {p.stem: i for i, p in enumerate(ds.pairs)}
    a, b = ds[idx["s000"]], ds[idx["s000__hflip"]]
    assert torch.equal(b["mask"], torch.flip(a["mask"], dims=[2]))
    assert torch.allclose(b["image"], torch.flip(a["image"], dims=[2]))


def test_strict_and_skip_through_the_datamodule(tmp_path, capsys):
    make_pairs(tmp_path / "im", tmp_path / "gt", n=4)
    (tmp_path / "gt" / "s001.png").write_bytes(b"")
    kw = dict(name="custom", root=str(tmp_path), images="im", masks="gt",
              aug={"name": "strong", "size": 32}, batch_size=2, verbose=False)
    with pytest.raises(DataCheckError, match="s001.png"):
        SegDataModule(**kw).setup("fit")
    logs = tmp_path / "logs"
    dm = SegDataModule(on_error="skip", skip_log_dir=str(logs), **kw)
    dm.setup("fit")
    assert [p.stem for p in dm.train_pairs] == ["s000", "s002", "s003"]
    assert "s001.png" in next(logs.glob("*.log")).read_text()
    assert "skipped 1 pair" in capsys.readouterr().err


def test_missing_root_is_one_clear_message(tmp_path):
    # a data.root that does not exist is refused (and never created)
    cfg = _compose("+data=dis5k", f"data.root={tmp_path / 'nope'}")
    with pytest.raises(Exception) as e:
        instantiate(cfg.data)
    assert "data.root" in str(e.value) and "does not exist" in str(e.value)
    assert not (tmp_path / "nope").exists()
    # an existing root without the layout names the expected folders and the prepare script
    (tmp_path / "empty").mkdir()
    dm = instantiate(_compose("+data=dis5k", f"data.root={tmp_path / 'empty'}").data)
    with pytest.raises(DataLayoutError) as e:
        dm.setup("fit")
    assert "DIS5K/DIS-TR/im" in str(e.value) and "prepare_dis5k.py" in str(e.value)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="on_error"):
        SegDataModule(root=str(tmp_path), on_error="ignore")
    with pytest.raises(ValueError, match="convention"):
        SegDataModule(root=str(tmp_path), convention="x")


def test_cache_gives_the_same_batches(tmp_path):
    make_pairs(tmp_path / "im", tmp_path / "gt", n=3, h=40, w=56)
    source = [{"kind": "folder", "images": "im", "masks": "gt"}]
    kw = dict(name="c", root=str(tmp_path), train=source, test=source,
              aug={"name": "isnet_paper", "size": 32, "flip": "none"}, batch_size=3,
              verbose=False)

    def training_samples(dm: SegDataModule) -> list[dict]:
        dm.setup("fit")
        ds = dm.make_dataset(dm.train_pairs, True)
        return [ds[i] for i in range(len(ds))]

    plain = training_samples(SegDataModule(**kw))
    dm = SegDataModule(cache={"enabled": True, "dir": str(tmp_path / "cache")}, **kw)
    cached, cached2 = training_samples(dm), training_samples(dm)
    for a, b, c in zip(plain, cached, cached2):
        torch.testing.assert_close(a["image"], b["image"])
        torch.testing.assert_close(a["mask"], b["mask"], atol=1.5 / 255, rtol=0)
        torch.testing.assert_close(b["image"], c["image"])
    assert dm.cache.misses == 3 and dm.cache.hits == 3
    # evaluation images are prepared from the original files by the card's Preprocessor (as
    # salseg-predict does), never from the resize cache
    test_plain = next(iter(SegDataModule(**kw).test_dataloader()[0]))
    test_cached = next(iter(dm.test_dataloader()[0]))
    assert dm.cache.misses == 3 and dm.cache.hits == 3
    torch.testing.assert_close(test_plain["image"], test_cached["image"], atol=0, rtol=0)
    assert all(torch.equal(a, b) for a, b in zip(test_plain["gt"], test_cached["gt"]))


def test_custom_config_through_hydra(tmp_path):
    make_pairs(tmp_path / "im", tmp_path / "gt", n=10)
    cfg = _compose("+data=custom", f"data.root={tmp_path}", "data.images=im", "data.masks=gt",
                   "+aug=strong", "aug.size=32")
    dm = instantiate(cfg.data, verbose=False)
    dm.setup("fit")
    assert len(dm.train_pairs) == 9 and len(dm.val_pairs) == 1  # val_split 0.1
    b = next(iter(dm.val_dataloader()))
    assert b["image"].shape[-2:] == (32, 32) and b["gt"][0].shape == (1, 48, 64)


def test_epoch_seeded_order_and_augmentation(synth_root):
    """Batches of epoch k are a function of (seed, k): a fresh loader set to epoch k repeats them."""

    def epoch_batches(epoch, workers=0):
        dm = _synth_dm(synth_root, num_workers=workers)
        dm.setup("fit")
        dl = dm.train_dataloader()
        dl.sampler.set_epoch(epoch)
        return [(b["path"], b["image"]) for b in dl]

    for workers in (0, 2):
        a, b, c = epoch_batches(3, workers), epoch_batches(3, workers), epoch_batches(4, workers)
        assert [p for p, _ in a] == [p for p, _ in b]
        assert all(torch.equal(x, y) for (_, x), (_, y) in zip(a, b))
        assert [p for p, _ in a] != [p for p, _ in c]


def test_mix_adds_a_seeded_fraction_after_the_val_split(tmp_path):
    from salseg.data.datamodule import SegDataModule

    synth = {"size": [32, 32], "n_train": 20, "n_val": 4}
    dm = SegDataModule(name="custom", root=str(tmp_path), synthetic=synth, val_split=0.25,
                       train=[{"kind": "synthetic", "split": "val"}], check="header",
                       mix=[{"kind": "synthetic", "split": "train", "fraction": 0.5}],
                       aug={"name": "u2net_paper", "size": 32, "crop": None}, verbose=False)
    dm.setup("fit")
    mixed = [p for p in dm.train_pairs if "/train/" in p.image]
    assert len(mixed) == 10  # half of the 20 training pairs
    assert all("/val/" in p.image for p in dm.val_pairs) and len(dm.val_pairs) == 1
    dm2 = SegDataModule(name="custom", root=str(tmp_path), synthetic=synth, val_split=0.25,
                        train=[{"kind": "synthetic", "split": "val"}], check="header",
                        mix=[{"kind": "synthetic", "split": "train", "fraction": 0.5}],
                        aug={"name": "u2net_paper", "size": 32, "crop": None}, verbose=False)
    dm2.setup("fit")
    assert [p.image for p in dm2.train_pairs] == [p.image for p in dm.train_pairs]


def test_data_config_sources_include_mix(tmp_path):
    """salseg-data check lists a config's sources through the datamodule (mix included)."""
    from salseg.data.datamodule import data_config

    dm = data_config(["data=custom", f"data.root={tmp_path}", "data.images=a", "data.masks=b",
                      "data.mix=[{kind: folder, images: c, masks: d}]"])
    specs = dm.source_specs()
    assert ("mix", {"kind": "folder", "images": "c", "masks": "d"}) in specs
    assert any(split == "train" and s.get("images") == "a" for split, s in specs)
    assert dm.root == tmp_path.resolve()
