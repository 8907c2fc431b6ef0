"""Decoding rules of salseg.data.io on real files (modes, EXIF, 16-bit, broken files)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from test_data_helpers import (  # noqa: F401 (isolated_cache is an autouse fixture)
    blob_mask,
    isolated_cache,
    rgb,
    truncate_file,
    write_16bit_gray,
    write_16bit_rgb,
    write_exif_rotated_jpeg,
    write_image,
)

from salseg.data.errors import DataError
from salseg.data.io import image_size, load_image, load_mask, read_image, read_mask


def test_rgb_png_roundtrip(tmp_path):
    a = rgb(20, 30)
    p = write_image(tmp_path / "a.png", a)
    out = read_image(p)
    assert out.dtype == np.uint8 and out.shape == (20, 30, 3)
    np.testing.assert_array_equal(out, a)
    assert load_image(p).notes == []


def test_grayscale_replicated(tmp_path):
    g = rgb(20, 30)[..., 0]
    p = tmp_path / "g.png"
    Image.fromarray(g, "L").save(p)
    r = load_image(p)
    assert r.array.shape == (20, 30, 3)
    for c in range(3):
        np.testing.assert_array_equal(r.array[..., c], g)
    assert any("grayscale" in n for n in r.notes)


def test_rgba_alpha_dropped_or_composited(tmp_path):
    a = rgb(10, 12)
    alpha = np.full((10, 12), 64, np.uint8)
    p = tmp_path / "a.png"
    Image.fromarray(np.dstack([a, alpha]), "RGBA").save(p)
    dropped = load_image(p)
    np.testing.assert_array_equal(dropped.array, a)
    assert any("alpha channel dropped" in n for n in dropped.notes)
    black = read_image(p, alpha="black")
    np.testing.assert_array_equal(black, np.rint(a * (64 / 255)).astype(np.uint8))
    white = read_image(p, alpha="white")
    exp = np.rint(a * (64 / 255) + 255 * (1 - 64 / 255)).astype(np.uint8)
    np.testing.assert_array_equal(white, exp)
    with pytest.raises(ValueError):
        read_image(p, alpha="green")


def test_la_and_palette_and_cmyk(tmp_path):
    g = rgb(10, 12)[..., 0]
    Image.fromarray(np.dstack([g, g]), "LA").save(tmp_path / "la.png")
    out = read_image(tmp_path / "la.png")
    np.testing.assert_array_equal(out[..., 1], g)

    pal = Image.fromarray(rgb(10, 12)).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    pal.save(tmp_path / "p.png")
    r = load_image(tmp_path / "p.png")
    np.testing.assert_array_equal(r.array, np.asarray(pal.convert("RGB")))
    assert any("palette" in n for n in r.notes)

    pal.info["transparency"] = 0
    pal.save(tmp_path / "pt.png", transparency=0)
    assert read_image(tmp_path / "pt.png").shape == (10, 12, 3)

    cmyk = Image.fromarray(rgb(10, 12)).convert("CMYK")
    cmyk.save(tmp_path / "c.jpg", quality=95)
    r = load_image(tmp_path / "c.jpg")
    assert r.mode == "CMYK" and r.array.shape == (10, 12, 3)
    np.testing.assert_array_equal(r.array, np.asarray(Image.open(tmp_path / "c.jpg").convert("RGB")))
    assert any("CMYK" in n for n in r.notes)


def test_16bit_images(tmp_path):
    v = (np.arange(10 * 12, dtype=np.uint32).reshape(10, 12) * 500).astype(np.uint16)
    p = write_16bit_gray(tmp_path / "g16.png", v)
    r = load_image(p)
    np.testing.assert_array_equal(r.array[..., 0], np.rint(v / 257.0).astype(np.uint8))
    assert any("16-bit" in n for n in r.notes)
    c = np.stack([v, v // 2, v // 3], -1).astype(np.uint16)
    p = write_16bit_rgb(tmp_path / "c16.png", c)
    r = load_image(p)
    np.testing.assert_array_equal(r.array, (c >> 8).astype(np.uint8))
    assert any("16-bit" in n for n in r.notes)


def test_exif_orientation_applied(tmp_path):
    a = rgb(20, 30)
    a[:5, :5] = 255  # marker in the stored top-left corner
    p = write_exif_rotated_jpeg(tmp_path / "r.jpg", a, orientation=6)  # 6 = rotate 90 CW to view
    r = load_image(p)
    assert r.exif_transposed and r.raw_size == (20, 30)
    assert r.array.shape == (30, 20, 3)
    assert image_size(p) == (30, 20)
    # orientation 6: the stored top-left corner ends up top-right
    assert r.array[:4, -4:].mean() > 200 and r.array[:4, :4].mean() < 230
    raw = np.asarray(Image.open(p).convert("RGB"))  # stored pixels, orientation ignored
    np.testing.assert_array_equal(r.array, np.rot90(raw, k=-1))


@pytest.mark.parametrize("kind", ["empty", "missing", "garbage", "trunc_jpg", "trunc_png", "dir"])
def test_bad_files_raise_naming_the_file(tmp_path, kind):
    p = tmp_path / f"bad_{kind}.png"
    if kind == "empty":
        p.write_bytes(b"")
        expect = "empty (0 bytes)"
    elif kind == "missing":
        expect = "does not exist"
    elif kind == "garbage":
        p.write_bytes(b"this is not an image at all" * 10)
        expect = "not a readable image"
    elif kind == "trunc_jpg":
        p = truncate_file(write_image(tmp_path / "t.jpg", rgb(64, 64), quality=95), 0.5)
        expect = "truncated"
    elif kind == "trunc_png":
        p = truncate_file(write_image(tmp_path / "t.png", rgb(64, 64)), 0.6)
        expect = "truncated"
    else:
        p.mkdir()
        expect = "directory"
    for reader in (read_image, read_mask):
        with pytest.raises(DataError) as e:
            reader(p)
        assert str(p) in str(e.value) and expect in str(e.value)
        assert e.value.path == str(p)


def test_mask_8bit_soft_kept(tmp_path):
    m = blob_mask(20, 30, soft=True)
    Image.fromarray(m).save(tmp_path / "m.png")
    r = load_mask(tmp_path / "m.png")
    assert r.array.dtype == np.float32 and r.array.shape == (20, 30)
    np.testing.assert_allclose(r.array, m / 255.0, atol=1e-7)
    assert r.soft_pixels == int(((m > 0) & (m < 255)).sum()) > 0


def test_mask_01_valued_is_binary(tmp_path):
    m = (blob_mask(20, 30) > 0).astype(np.uint8)  # values 0/1
    Image.fromarray(m).save(tmp_path / "m01.png")
    r = load_mask(tmp_path / "m01.png")
    assert r.binary_01
    np.testing.assert_array_equal(r.array, m.astype(np.float32))
    assert any("0/1" in n for n in r.notes)


def test_mask_multichannel_uses_channel0(tmp_path):
    m = blob_mask(20, 30)
    three = np.dstack([m, m // 2, np.zeros_like(m)])
    Image.fromarray(three).save(tmp_path / "m3.png")
    r = load_mask(tmp_path / "m3.png")
    np.testing.assert_allclose(r.array, m / 255.0)
    assert any("channel 0 used (channels differ)" in n for n in r.notes)


def test_mask_in_alpha_channel(tmp_path):
    m = blob_mask(20, 30)
    rgba = np.dstack([np.zeros((20, 30, 3), np.uint8), m])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "ma.png")
    r = load_mask(tmp_path / "ma.png")
    np.testing.assert_allclose(r.array, m / 255.0)
    assert any("alpha used" in n for n in r.notes)


def test_mask_16bit_palette_and_1bit(tmp_path):
    v = (blob_mask(20, 30).astype(np.uint16) * 257)
    write_16bit_gray(tmp_path / "m16.png", v)
    np.testing.assert_allclose(read_mask(tmp_path / "m16.png"), v / 65535.0, atol=1e-6)
    m = blob_mask(20, 30)
    Image.fromarray(m).convert("P").save(tmp_path / "mp.png")
    np.testing.assert_allclose(read_mask(tmp_path / "mp.png"), m / 255.0)
    Image.fromarray(m > 0).save(tmp_path / "m1.png")
    assert Image.open(tmp_path / "m1.png").mode == "1"
    np.testing.assert_array_equal(read_mask(tmp_path / "m1.png"), (m > 0).astype(np.float32))


@pytest.mark.parametrize("kw", [{"subsampling": 0}, {"subsampling": 2}, {"progressive": True},
                                {"optimize": True, "quality": 70}])
def test_fast_jpeg_decoding_equals_pillow(tmp_path, kw):
    yy, xx = np.mgrid[0:37, 0:53]
    a = np.dstack([xx * 4, yy * 6, (xx + yy) * 2]).astype(np.uint8) ^ rgb(37, 53)[..., :3] // 8
    p = write_image(tmp_path / "a.jpg", a, **kw)
    np.testing.assert_array_equal(read_image(p, fast=True), read_image(p, fast=False))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_fast_path_applies_every_exif_orientation_like_pillow(tmp_path, orientation):
    from PIL import ImageOps

    a = rgb(20, 30)
    p = write_exif_rotated_jpeg(tmp_path / "o.jpg", a, orientation=orientation)
    ref = np.asarray(ImageOps.exif_transpose(Image.open(p)).convert("RGB"))
    fast = load_image(p, fast=True)
    np.testing.assert_array_equal(fast.array, ref)
    np.testing.assert_array_equal(read_image(p, fast=False), ref)
    assert fast.exif_transposed == (orientation != 1)


def test_fast_png_paths_equal_pillow(tmp_path):
    p = write_image(tmp_path / "a.png", rgb(20, 30))
    np.testing.assert_array_equal(read_image(p, fast=True), read_image(p, fast=False))
    m = blob_mask(20, 30, soft=True)
    Image.fromarray(m).save(tmp_path / "m.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png", fast=True),
                                  read_mask(tmp_path / "m.png", fast=False))
    Image.fromarray((m > 0).astype(np.uint8)).save(tmp_path / "m01.png")
    assert load_mask(tmp_path / "m01.png", fast=True).binary_01


def test_fast_path_still_reports_truncation(tmp_path):
    p = truncate_file(write_image(tmp_path / "t.jpg", rgb(64, 64), quality=95), 0.5)
    with pytest.raises(DataError, match="truncated"):
        read_image(p, fast=True)
    q = truncate_file(write_image(tmp_path / "t.png", rgb(64, 64)), 0.6)
    with pytest.raises(DataError, match="truncated"):
        read_mask(q, fast=True)


def test_png_with_exif_orientation(tmp_path):
    a = rgb(20, 30)
    exif = Image.Exif()
    exif[0x0112] = 6
    p = tmp_path / "o.png"
    Image.fromarray(a).save(p, exif=exif)
    for fast in (True, False):
        r = load_image(p, fast=fast)
        assert r.exif_transposed and r.array.shape == (30, 20, 3)
        np.testing.assert_array_equal(r.array, np.rot90(a, k=-1))
    assert image_size(p) == (30, 20)
    m = blob_mask(20, 30)
    Image.fromarray(m).save(tmp_path / "m.png", exif=exif)
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png"), np.rot90(m, k=-1) / 255.0)
    from salseg.data.io import mask_to_unit, read_mask_levels

    np.testing.assert_allclose(mask_to_unit(read_mask_levels(tmp_path / "m.png")),
                               np.rot90(m, k=-1) / 255.0, atol=1e-7)
