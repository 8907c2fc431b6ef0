"""Every file salseg writes itself honours the umask (issue 10 item 6): the temporary files of the
atomic writers are created by ``mkstemp`` (mode 0600), so without care every mask, report, state
dict, ONNX export, cache entry and download ends up private whatever the umask."""
from __future__ import annotations

import os
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest
from fixtures.predict.helpers import object_image, random_model, save, single_thread  # noqa: F401

from salseg.atomic import current_umask, mkdtemp, mkstemp, write_bytes_atomic, write_text_atomic


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture(params=[0o022, 0o027])
def umask(request):
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def test_current_umask_does_not_change_it(umask):
    assert current_umask() == umask
    assert current_umask() == umask


def test_atomic_writers_and_temp_helpers(tmp_path, umask):
    want = 0o666 & ~umask
    assert _mode(write_bytes_atomic(b"x", tmp_path / "a.bin")) == want
    assert _mode(write_text_atomic("x", tmp_path / "b.txt")) == want
    assert _mode(write_bytes_atomic(b"y", tmp_path / "a.bin", overwrite=True)) == want
    fd, tmp = mkstemp(tmp_path)
    os.close(fd)
    assert _mode(Path(tmp)) == want
    assert _mode(Path(mkdtemp(tmp_path))) == 0o777 & ~umask
    if umask == 0o022:
        assert want == 0o644


def test_prediction_outputs(tmp_path, umask):
    from salseg.cli.predict import main

    weights = tmp_path / "w.pth"
    from salseg.models.weights import save_state_dict

    save_state_dict(random_model("u2netp", seed=1), weights)
    assert _mode(weights) == 0o666 & ~umask
    save(object_image(40, 48), tmp_path / "in" / "a.png")
    out = tmp_path / "out"
    code = main([str(tmp_path / "in"), "-o", str(out), "--weights", str(weights), "--model",
                 "u2netp", "--save", "mask,cutout", "--input-size", "32", "--device", "cpu",
                 "-q"])
    assert code == 0
    for path in (out / "a.png", out / "cutout" / "a.png"):
        assert _mode(path) == 0o666 & ~umask, path


def test_caches_downloads_and_synthetic_data(tmp_path, umask):
    from salseg.data.cache import ResizeCache
    from salseg.data.prepare import Remote, download, extract_splits
    from salseg.data.sources import Pair
    from salseg.data.synthetic import ensure_synthetic, make_spec
    from salseg.metrics.hce import SkeletonCache

    want = 0o666 & ~umask
    save(object_image(20, 24), tmp_path / "im.png")
    save((object_image(20, 24)[..., 0] > 100).astype(np.uint8) * 255, tmp_path / "gt.png")
    cache = ResizeCache(tmp_path / "cache")
    cache.get_array(Pair(str(tmp_path / "im.png"), str(tmp_path / "gt.png"), "im"), (8, 8))
    entries = list((tmp_path / "cache").rglob("*.npy"))
    assert entries and all(_mode(p) == want for p in entries)

    gt = np.zeros((16, 16), bool)
    gt[4:12, 4:12] = True
    SkeletonCache(tmp_path / "ske").get(gt)
    assert [_mode(p) for p in (tmp_path / "ske").glob("*.npy")] == [want]

    archive = tmp_path / "src" / "DS.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("DS/train/x.txt", "x")
    got = download(Remote("DS.zip", archive.as_uri()), tmp_path / "dl", stream=open(os.devnull, "w"))
    assert _mode(got) == want
    placed = extract_splits(got, tmp_path / "ds", ("train",), stream=open(os.devnull, "w"))
    assert _mode(placed[0]) == 0o777 & ~umask

    folder = ensure_synthetic(tmp_path / "syn", make_spec("sod", size=32, n_train=1, n_val=1),
                              verbose=False)
    assert _mode(folder) == 0o777 & ~umask
    assert _mode(folder / "manifest.json") == want


@pytest.mark.parametrize("umask", [0o022], indirect=True)
def test_onnx_export(tmp_path, umask):
    from salseg.export.onnx import export_onnx

    report = export_onnx(random_model("u2netp", seed=2), tmp_path / "m.onnx", "u2netp",
                         trace_size=64, check=False)
    assert _mode(report.path) == 0o644
