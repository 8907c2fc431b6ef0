"""Dataset layouts: DUTS (standard, im_aug, virtual flips), DIS5K, saliency sets, folders, lists."""
from __future__ import annotations

import pytest
from test_data_helpers import (  # noqa: F401 (autouse fixture)
    isolated_cache,
    make_pairs,
    write_image,
    write_mask,
)

from salseg.data.errors import DataLayoutError
from salseg.data.sources import (
    DIS5K_SPLITS,
    list_source,
    pair_folders,
    read_pair_list,
    resolve_root,
)


def test_duts_standard_layout_and_virtual_flip(tmp_path):
    base = tmp_path / "DUTS" / "DUTS-TR"
    make_pairs(base / "DUTS-TR-Image", base / "DUTS-TR-Mask", n=3)
    lst = list_source({"kind": "duts", "split": "train"}, tmp_path)
    assert [p.stem for p in lst.pairs] == ["s000", "s001", "s002"]
    assert lst.expected_count == 10553 and not any(p.hflip for p in lst.pairs)
    flip = list_source({"kind": "duts", "split": "train", "offline_hflip": True}, tmp_path)
    assert len(flip.pairs) == 6 and sum(p.hflip for p in flip.pairs) == 3
    assert flip.pairs[1].image == flip.pairs[0].image and flip.pairs[1].stem == "s000__hflip"
    assert flip.expected_count == 2 * 10553


def test_duts_official_aug_layout(tmp_path):
    base = tmp_path / "DUTS" / "DUTS-TR"
    make_pairs(base / "im_aug", base / "gt_aug", n=4)
    lst = list_source({"kind": "duts", "split": "train"}, tmp_path)
    assert len(lst.pairs) == 4 and lst.expected_count == 21106
    with pytest.raises(DataLayoutError, match="already-flipped"):
        list_source({"kind": "duts", "split": "train", "offline_hflip": True}, tmp_path)
    # standard wins in auto mode when both exist; layout=aug forces the official one
    make_pairs(base / "DUTS-TR-Image", base / "DUTS-TR-Mask", n=2)
    assert len(list_source({"kind": "duts"}, tmp_path).pairs) == 2
    assert len(list_source({"kind": "duts", "layout": "aug"}, tmp_path).pairs) == 4


def test_duts_test_and_missing_root_message(tmp_path):
    base = tmp_path / "DUTS" / "DUTS-TE"
    make_pairs(base / "DUTS-TE-Image", base / "DUTS-TE-Mask", n=2)
    assert len(list_source({"kind": "duts", "split": "test"}, tmp_path).pairs) == 2
    with pytest.raises(DataLayoutError) as e:
        list_source({"kind": "duts", "split": "train"}, tmp_path / "nowhere")
    msg = str(e.value)
    assert "DUTS-TR-Image" in msg and "prepare_duts.py" in msg and "data.root" in msg


@pytest.mark.parametrize("split", DIS5K_SPLITS)
def test_dis5k_layout(tmp_path, split):
    make_pairs(tmp_path / "DIS5K" / split / "im", tmp_path / "DIS5K" / split / "gt", n=2)
    lst = list_source({"kind": "dis5k", "split": split}, tmp_path)
    assert len(lst.pairs) == 2 and lst.name == split


def test_dis5k_missing(tmp_path):
    with pytest.raises(DataLayoutError, match="prepare_dis5k.py"):
        list_source({"kind": "dis5k", "split": "DIS-VD"}, tmp_path)


@pytest.mark.parametrize(
    "name,folder,im,gt",
    [
        ("ECSSD", "ECSSD", "images", "ground_truth_mask"),
        ("HKU-IS", "HKU-IS", "imgs", "gt"),
        ("DUT-OMRON", "DUT-OMRON", "im", "gt"),
        ("dutomron", "DUT_OMRON", "im", "masks"),
        ("PASCAL-S", "PASCAL-S", "Imgs", "GT"),
        ("SOD", "SOD", "im", "gt"),
        ("DUTS-TE", "DUTS/DUTS-TE", "DUTS-TE-Image", "DUTS-TE-Mask"),
    ],
)
def test_saliency_sets(tmp_path, name, folder, im, gt):
    make_pairs(tmp_path / folder / im, tmp_path / folder / gt, n=2)
    lst = list_source({"kind": "saliency", "name": name}, tmp_path)
    assert len(lst.pairs) == 2


def test_saliency_missing_and_unknown(tmp_path):
    with pytest.raises(DataLayoutError, match="ECSSD/im"):
        list_source({"kind": "saliency", "name": "ECSSD"}, tmp_path)
    with pytest.raises(ValueError, match="unknown saliency"):
        list_source({"kind": "saliency", "name": "NOPE"}, tmp_path)


def test_folder_extensions_case_insensitive(tmp_path):
    im, gt = tmp_path / "im", tmp_path / "gt"
    exts = [".jpg", ".JPEG", ".png", ".BMP", ".tif", ".TIFF", ".webp", ".Jpg"]
    for i, ext in enumerate(exts):
        write_image(im / f"a{i}{ext}")
        write_mask(gt / f"a{i}.PNG" if i % 2 else gt / f"a{i}.png")
    (im / ".DS_Store").write_bytes(b"junk")  # hidden: ignored
    (im / "._a0.jpg").write_bytes(b"junk")  # AppleDouble: hidden, ignored
    (im / "notes.txt").write_text("hello")  # reported
    lst = pair_folders(im, gt)
    assert len(lst.pairs) == len(exts)
    assert lst.ignored_files == [str(im / "notes.txt")]
    assert not lst.has_pairing_errors


def test_folder_unmatched_and_duplicates(tmp_path):
    im, gt = tmp_path / "im", tmp_path / "gt"
    make_pairs(im, gt, n=2)
    write_image(im / "lonely.jpg")
    write_mask(gt / "orphan.png")
    write_image(im / "s000.png")  # duplicate stem s000 (jpg + png)
    write_image(im / "Case.jpg")
    write_image(im / "case.jpg")  # differ only in case
    write_mask(gt / "Case.png")
    write_mask(gt / "case.png")
    lst = pair_folders(im, gt)
    assert lst.images_without_masks == [str(im / "lonely.jpg")]
    assert lst.masks_without_images == [str(gt / "orphan.png")]
    dup_keys = [k for k, _ in lst.duplicate_stems]
    assert "s000" in dup_keys and "Case / case" in dup_keys
    assert [p.stem for p in lst.pairs] == ["Case", "case", "s001"]  # s000 ambiguous: excluded


def test_folder_missing(tmp_path):
    with pytest.raises(DataLayoutError, match="image folder not found"):
        pair_folders(tmp_path / "x", tmp_path / "y")


def test_pair_list_file(tmp_path):
    make_pairs(tmp_path / "d" / "im", tmp_path / "d" / "gt", n=3)
    lst_file = tmp_path / "d" / "pairs.txt"
    lst_file.write_text(
        "# comment\n"
        "im/s000.jpg\tgt/s000.png\n"
        "im/s001.jpg, gt/s001.png\n"
        f"{tmp_path}/d/im/s002.jpg {tmp_path}/d/gt/s002.png\n"
        "\n"
        "im/missing.jpg\tgt/s000.png\n"
        "im/s000.jpg\tgt/missing.png\n"
        "im/s001.jpg\tgt/s001.png\n"
    )
    lst = read_pair_list(lst_file)
    assert [p.stem for p in lst.pairs] == ["s000", "s002"]  # s001 listed twice -> duplicate
    assert len(lst.images_without_masks) == 1 and "line 6" in lst.images_without_masks[0]
    assert len(lst.masks_without_images) == 1 and "line 7" in lst.masks_without_images[0]
    assert lst.duplicate_stems and lst.duplicate_stems[0][0] == "s001"
    bad = tmp_path / "bad.txt"
    bad.write_text("a b c\n")
    with pytest.raises(DataLayoutError, match="line 1"):
        read_pair_list(bad)


def test_resolve_root(tmp_path, monkeypatch):
    from hydra.core.hydra_config import HydraConfig

    # outside a Hydra run (an in-process train.py test may have left Hydra's config set)
    monkeypatch.setattr(HydraConfig.instance(), "cfg", None)
    assert resolve_root(tmp_path) == tmp_path.resolve()
    monkeypatch.setenv("SALSEG_DATA_ROOT", str(tmp_path / "env"))
    assert resolve_root(None) == (tmp_path / "env").resolve()
    monkeypatch.delenv("SALSEG_DATA_ROOT")
    monkeypatch.chdir(tmp_path)
    assert resolve_root(None) == (tmp_path / "data").resolve()


def test_synthetic_source(tmp_path):
    spec = {"kind": "synthetic", "split": "val", "n_train": 2, "n_val": 3, "size": 64}
    lst = list_source(spec, tmp_path)
    assert len(lst.pairs) == 3 and lst.expected_count == 3
    assert (tmp_path / "synthetic").is_dir()


def test_unknown_kind(tmp_path):
    with pytest.raises(ValueError, match="unknown source kind"):
        list_source({"kind": "zip"}, tmp_path)
