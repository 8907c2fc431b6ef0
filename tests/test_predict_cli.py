"""salseg-predict: every output kind, input forms, bad inputs, no-overwrite, atomic writes."""
from __future__ import annotations

import io
import os

import numpy as np
import pytest
from fixtures.predict.helpers import object_image, random_model, save, single_thread  # noqa: F401
from PIL import Image

from salseg.cli.predict import main
from salseg.models.weights import save_state_dict
from salseg.predict import Predictor
from salseg.predict.io import OutputExistsError, write_png

SMALL = ["--input-size", "64", "--device", "cpu", "-q"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return save_state_dict(random_model("u2netp", seed=3),
                           tmp_path_factory.mktemp("w") / "u2netp.pth")


@pytest.fixture(scope="module")
def predictor(weights):
    return Predictor(weights, model="u2netp", input_size=64, device="cpu")


def _run(args, capsys):
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def test_all_output_kinds(tmp_path, weights, predictor, capsys):
    src = tmp_path / "in"
    save(object_image(70, 90, seed=1), src / "a.png")
    save(object_image(60, 50, seed=2), src / "b.jpg", quality=95)
    out = tmp_path / "out"
    code, err = _run([src, "-o", out, "--weights", weights, "--model", "u2netp",
                      "--save", "mask,cutout,composite,preview", "--bg-color", "#00ff00",
                      "--batch-size", "2", *SMALL], capsys)
    assert code == 0, err
    assert "2 predicted (8 file(s) written)" in err
    mask = Image.open(out / "a.png")
    assert mask.mode == "L" and mask.size == (90, 70)
    api = predictor.predict(src / "a.png")  # batch of 1 vs 2: a level may flip in rounding
    assert np.abs(np.asarray(mask, dtype=int) - api).max() <= 1
    assert (np.asarray(mask) == api).mean() > 0.99
    cut = Image.open(out / "cutout" / "a.png")
    assert cut.mode == "RGBA" and cut.size == (90, 70)
    np.testing.assert_array_equal(np.asarray(cut)[..., 3], np.asarray(mask))
    comp = np.asarray(Image.open(out / "composite" / "b.png"))
    assert comp.shape == (60, 50, 3)
    bg = np.asarray(Image.open(out / "b.png")) == 0
    assert (comp[bg] == [0, 255, 0]).all()
    assert Image.open(out / "preview" / "a.png").size[1] == 70
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]  # no temp files left


def test_postprocessing_flags_and_background_image(tmp_path, weights, capsys):
    src = save(object_image(64, 64), tmp_path / "x.png")
    bg = save(np.full((10, 10, 3), 77, np.uint8), tmp_path / "bg.png")
    out = tmp_path / "out"
    code, err = _run([src, "-o", out, "--weights", weights, "--threshold", "0.5",
                      "--largest-component", "--fill-holes", "--erode", "1", "--feather", "0",
                      "--save", "mask,composite", "--bg-image", bg, "--decontaminate",
                      "--raw-sigmoid", *SMALL], capsys)
    assert code == 0, err
    mask = np.asarray(Image.open(out / "x.png"))
    assert set(np.unique(mask)) <= {0, 255}
    comp = np.asarray(Image.open(out / "composite" / "x.png"))
    assert (comp[mask == 0] == 77).all()


def test_bad_inputs_are_reported_and_the_run_continues(tmp_path, weights, capsys):
    src = tmp_path / "in"
    good = object_image(64, 64)
    save(good, src / "good.png")
    (src / "empty.png").write_bytes(b"")
    (src / "text.png").write_text("not an image")
    data = io.BytesIO()
    Image.fromarray(good).save(data, format="PNG")
    (src / "truncated.png").write_bytes(data.getvalue()[: len(data.getvalue()) // 2])
    save(object_image(200, 200), src / "huge.png")
    out = tmp_path / "out"
    code, err = _run([src, tmp_path / "missing.jpg", "-o", out, "--weights", weights,
                      "--max-pixels", "20000", *SMALL], capsys)
    assert code == 1
    for name, reason in [("empty.png", "empty"), ("text.png", "not a readable image"),
                         ("truncated.png", "truncated"), ("huge.png", "above the limit"),
                         ("missing.jpg", "no such file")]:
        assert any(name in line and reason in line for line in err.splitlines()), (name, err)
    assert "1 predicted" in err and "5 failed" in err
    assert sorted(p.name for p in out.iterdir()) == ["good.png"]


def test_image_modes_exif_and_16_bit(tmp_path, weights, capsys):
    src = tmp_path / "in"
    img = object_image(40, 64)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    src.mkdir()
    Image.fromarray(img).save(src / "rot.jpg", exif=exif)
    Image.fromarray(img).convert("L").save(src / "gray.png")
    Image.fromarray(img).convert("P").save(src / "palette.png")
    Image.fromarray(img).convert("CMYK").save(src / "cmyk.jpg")
    Image.fromarray(img).convert("RGBA").save(src / "rgba.png")
    Image.fromarray(img[..., 0].astype(np.uint16) * 257).save(src / "deep.png")
    out = tmp_path / "out"
    code, err = _run([src, "-o", out, "--weights", weights, *SMALL], capsys)
    assert code == 0, err
    assert Image.open(out / "rot.png").size == (40, 64)  # EXIF orientation applied
    for stem in ("gray", "palette", "cmyk", "rgba", "deep"):
        assert Image.open(out / f"{stem}.png").size == (64, 40)


def test_no_overwrite_then_overwrite(tmp_path, weights, capsys):
    src = save(object_image(64, 64), tmp_path / "a.png")
    out = tmp_path / "out"
    assert _run([src, "-o", out, "--weights", weights, *SMALL], capsys)[0] == 0
    target = out / "a.png"
    target.write_bytes(b"keep me")
    code, err = _run([src, "-o", out, "--weights", weights, "--save", "mask,cutout", *SMALL],
                     capsys)
    assert code == 0 and target.read_bytes() == b"keep me"  # existing output kept
    assert (out / "cutout" / "a.png").is_file()  # the missing output was written
    code, err = _run([src, "-o", out, "--weights", weights, *SMALL], capsys)
    assert code == 0 and "1 skipped" in err
    code, err = _run([src, "-o", out, "--weights", weights, "--overwrite", *SMALL], capsys)
    assert code == 0 and Image.open(target).size == (64, 64)


def test_recursive_globs_lists_and_workers(tmp_path, weights, capsys):
    src = tmp_path / "in"
    save(object_image(64, 64, seed=1), src / "top.png")
    save(object_image(64, 64, seed=2), src / "sub" / "deep.png")
    out = tmp_path / "out"
    code, err = _run([src, "-o", out, "--weights", weights, *SMALL], capsys)
    assert code == 0 and not (out / "sub").exists()
    code, err = _run([src, "-o", out, "--weights", weights, "--recursive",
                      "--num-workers", "2", "--batch-size", "2", *SMALL], capsys)
    assert code == 0 and (out / "sub" / "deep.png").is_file()
    listing = tmp_path / "list.txt"
    listing.write_text("# images\nin/top.png\nin/sub/deep.png\n")
    out2 = tmp_path / "out2"
    code, err = _run([listing, "-o", out2, "--weights", weights, *SMALL], capsys)
    assert code == 0 and {p.name for p in out2.iterdir()} == {"top.png", "deep.png"}
    out3 = tmp_path / "out3"
    code, err = _run([str(src / "**" / "*.png"), "-o", out3, "--weights", weights, *SMALL],
                     capsys)
    assert code == 0 and {p.name for p in out3.iterdir()} == {"top.png", "deep.png"}
    save(object_image(64, 64, seed=3), tmp_path / "other" / "top.png")
    code, err = _run([src / "top.png", tmp_path / "other" / "top.png", "-o", tmp_path / "o4",
                      "--weights", weights, *SMALL], capsys)
    assert code == 1 and "already used" in err


def test_usage_errors(tmp_path, weights, capsys):
    src = save(object_image(64, 64), tmp_path / "a.png")
    with pytest.raises(SystemExit) as exc:
        main([str(src), "-o", str(tmp_path / "o")])  # no weights
    assert exc.value.code == 2
    with pytest.raises(SystemExit):
        main([str(src), "-o", str(tmp_path / "o"), "--weights", str(weights), "--save", "bogus"])
    code, err = _run([src, "-o", tmp_path / "o", "--weights", weights, "--model", "isnet",
                      *SMALL], capsys)
    assert code == 2 and "u2netp" in err
    capsys.readouterr()


def test_atomic_no_clobber_write(tmp_path):
    path = tmp_path / "m.png"
    write_png(np.zeros((4, 4), np.uint8), path)
    with pytest.raises(OutputExistsError):
        write_png(np.ones((4, 4), np.uint8), path)
    assert np.asarray(Image.open(path)).max() == 0
    write_png(np.ones((4, 4), np.uint8), path, overwrite=True)
    assert np.asarray(Image.open(path)).max() == 1
    assert os.listdir(tmp_path) == ["m.png"]


def test_write_failures_are_reported_by_name(tmp_path, weights, capsys):
    src = save(object_image(64, 64), tmp_path / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "cutout").write_text("a file where the cutout folder should be")
    code, err = _run([src, "-o", out, "--weights", weights, "--save", "mask,cutout", *SMALL],
                     capsys)
    assert code == 1 and "FAILED" in err and "a.png" in err and "1 failed" in err
