"""Every validation rule with a real bad file; strict vs skip; the salseg-data check CLI."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from test_data_helpers import (  # noqa: F401 (autouse fixture)
    blob_mask,
    isolated_cache,
    make_pairs,
    rgb,
    truncate_file,
    write_16bit_gray,
    write_exif_rotated_jpeg,
    write_image,
    write_mask,
)

from salseg.cli.data import main as data_main
from salseg.data.check import RULES, apply_policy, check_pairs
from salseg.data.errors import DataCheckError
from salseg.data.sources import pair_folders


def _report(tmp_path, level="full"):
    lst = pair_folders(tmp_path / "im", tmp_path / "gt", "t")
    return check_pairs(lst.pairs, name="t", listing=lst, level=level)


def _rules(report, path=None):
    return {i.rule for i in report.issues if path is None or i.path == str(path)}


@pytest.fixture
def clean(tmp_path):
    make_pairs(tmp_path / "im", tmp_path / "gt", n=2)
    return tmp_path


def test_clean_set_has_no_issues(clean):
    r = _report(clean)
    assert r.issues == [] and len(r.ok_pairs) == 2


def test_pairing_rules(clean):
    write_image(clean / "im" / "lonely.jpg")
    write_mask(clean / "gt" / "orphan.png")
    write_image(clean / "im" / "s000.png")
    r = _report(clean)
    assert _rules(r, clean / "im" / "lonely.jpg") == {"image_without_mask"}
    assert _rules(r, clean / "gt" / "orphan.png") == {"mask_without_image"}
    assert _rules(r, clean / "im" / "s000.png") == {"duplicate_stem"}
    assert [p.stem for p in r.ok_pairs] == ["s001"]


@pytest.mark.parametrize("which", ["image", "mask"])
@pytest.mark.parametrize("how", ["zero_byte", "truncated", "garbage"])
def test_unreadable_rule(clean, which, how):
    f = clean / "im" / "s000.jpg" if which == "image" else clean / "gt" / "s000.png"
    if how == "zero_byte":
        f.write_bytes(b"")
    elif how == "truncated":
        if which == "image":
            write_image(f, rgb(64, 64), quality=95)
        else:
            write_mask(f, blob_mask(64, 64, soft=True))
        truncate_file(f, 0.5)
    else:
        f.write_bytes(b"\x89PNG but not really" * 5)
    r = _report(clean)
    assert _rules(r, f) == {"unreadable"}
    assert len(r.ok_pairs) == 1 and r.ok_pairs[0].stem == "s001"


def test_size_mismatch_rule(clean):
    write_mask(clean / "gt" / "s000.png", blob_mask(40, 64))
    r = _report(clean)
    assert _rules(r, clean / "gt" / "s000.png") == {"size_mismatch"}
    # the header-only level finds it too (but not truncation)
    rh = _report(clean, level="header")
    assert _rules(rh, clean / "gt" / "s000.png") == {"size_mismatch"}


def test_exif_rule_and_mismatch_hint(clean):
    a = np.full((48, 64, 3), 120, np.uint8)
    write_exif_rotated_jpeg(clean / "im" / "s000.jpg", a, orientation=6)
    # mask drawn on the stored (unrotated) pixels: 48x64 -> does not line up after rotation
    r = _report(clean)
    issues = [i for i in r.issues if i.rule == "size_mismatch"]
    assert len(issues) == 1 and "before rotation" in issues[0].message
    assert "exif_rotated" in _rules(r, clean / "im" / "s000.jpg")
    # a mask in the oriented geometry lines up: a note only
    write_mask(clean / "gt" / "s000.png", blob_mask(64, 48))
    r = _report(clean)
    assert _rules(r) == {"exif_rotated"} and len(r.ok_pairs) == 2


def test_mask_content_rules(clean):
    m = blob_mask()
    Image.fromarray(np.dstack([m, m // 2, m])).save(clean / "gt" / "s000.png")
    r = _report(clean)
    assert _rules(r, clean / "gt" / "s000.png") == {"mask_multichannel"}
    Image.fromarray(blob_mask(soft=True)).save(clean / "gt" / "s000.png")
    r = _report(clean)
    soft = [i for i in r.issues if i.rule == "soft_mask"]
    assert len(soft) == 1 and "pixels" in soft[0].message and r.soft_pixel_masks == 1
    Image.fromarray((m > 0).astype(np.uint8)).save(clean / "gt" / "s000.png")
    assert _rules(_report(clean), clean / "gt" / "s000.png") == {"mask_01"}
    Image.fromarray(np.zeros_like(m)).save(clean / "gt" / "s000.png")
    assert _rules(_report(clean), clean / "gt" / "s000.png") == {"empty_mask"}
    write_16bit_gray(clean / "gt" / "s000.png", m.astype(np.uint16) * 257)
    assert _rules(_report(clean), clean / "gt" / "s000.png") == {"mask_16bit"}
    # none of these is an error
    assert len(_report(clean).ok_pairs) == 2


def test_image_conversion_rules(clean):
    g = rgb()[..., 0]
    (clean / "im" / "s000.jpg").unlink()
    Image.fromarray(g, "L").save(clean / "im" / "s000.png")
    assert _rules(_report(clean), clean / "im" / "s000.png") == {"image_converted"}
    Image.fromarray(np.dstack([rgb(), g]), "RGBA").save(clean / "im" / "s000.png")
    r = _report(clean)
    assert _rules(r, clean / "im" / "s000.png") == {"image_converted"}
    assert any("alpha" in i.message for i in r.issues)
    Image.fromarray(rgb()).convert("CMYK").save(clean / "im" / "s001.jpg")
    assert _rules(_report(clean), clean / "im" / "s001.jpg") == {"image_converted"}
    Image.fromarray(rgb()).convert("P").save(clean / "im" / "s000.png")
    assert _rules(_report(clean), clean / "im" / "s000.png") == {"image_converted"}
    write_16bit_gray(clean / "im" / "s000.png", g.astype(np.uint16) * 257)
    assert _rules(_report(clean), clean / "im" / "s000.png") == {"image_16bit"}


def test_ignored_and_count_rules(clean):
    (clean / "im" / "readme.txt").write_text("x")
    assert "ignored_file" in _rules(_report(clean))
    lst = pair_folders(clean / "im", clean / "gt", "DUTS-TR", expected_count=10553)
    r = check_pairs(lst.pairs, name="x", listing=lst)
    assert any(i.rule == "count_mismatch" and "10553" in i.message for i in r.issues)


def test_every_rule_has_a_severity():
    assert set(RULES.values()) == {"error", "warning", "note"}


def test_strict_raises_with_full_list(clean):
    (clean / "im" / "s000.jpg").write_bytes(b"")
    write_image(clean / "im" / "lonely.jpg")
    r = _report(clean)
    with pytest.raises(DataCheckError) as e:
        apply_policy(r, "raise")
    msg = str(e.value)
    assert str(clean / "im" / "s000.jpg") in msg and str(clean / "im" / "lonely.jpg") in msg
    assert "data.on_error=skip" in msg and len(e.value.issues) == 2


def test_skip_writes_log_and_summary(clean, tmp_path_factory, capsys):
    (clean / "im" / "s000.jpg").write_bytes(b"")
    write_image(clean / "im" / "lonely.jpg")
    logs = tmp_path_factory.mktemp("logs")
    pairs = apply_policy(_report(clean), "skip", logs)
    assert [p.stem for p in pairs] == ["s001"]
    err = capsys.readouterr().err
    assert "unreadable" in err and "image_without_mask" in err and "skipped" in err
    (log,) = list(logs.glob("salseg-data-skipped-*.log"))
    text = log.read_text()
    assert str(clean / "im" / "s000.jpg") in text and str(clean / "im" / "lonely.jpg") in text
    assert str(log) in err


def test_stamp_remembers_and_notices_changes(clean):
    Image.fromarray(blob_mask(soft=True)).save(clean / "gt" / "s000.png")
    (clean / "im" / "notes.txt").write_text("x")  # a listing warning
    r1 = _report(clean)
    r2 = _report(clean)
    assert not r1.from_stamp and r2.from_stamp
    assert sorted(map(str, r1.issues)) == sorted(map(str, r2.issues))  # same, no duplicates
    assert r2.soft_pixel_masks == 1
    truncate_file(write_image(clean / "im" / "s000.jpg", rgb(64, 64), quality=95), 0.5)
    r3 = _report(clean)
    assert not r3.from_stamp and r3.errors


def test_parallel_check_matches_serial(tmp_path):
    make_pairs(tmp_path / "im", tmp_path / "gt", n=70, h=16, w=16)
    (tmp_path / "im" / "s005.jpg").write_bytes(b"")
    lst = pair_folders(tmp_path / "im", tmp_path / "gt")
    a = check_pairs(lst.pairs, listing=lst, workers=2, use_stamp=False)
    b = check_pairs(lst.pairs, listing=lst, workers=0, use_stamp=False)
    assert [str(i) for i in a.issues] == [str(i) for i in b.issues] and len(a.ok_pairs) == 69


# ----------------------------------------------------------------------------- CLI


def test_cli_check_folders(clean, capsys, tmp_path_factory):
    assert data_main(["check", "--images", str(clean / "im"), "--masks", str(clean / "gt")]) == 0
    assert "OK" in capsys.readouterr().out
    (clean / "im" / "s001.jpg").write_bytes(b"")
    write_mask(clean / "gt" / "orphan.png")
    logs = tmp_path_factory.mktemp("clilogs")
    rc = data_main(["check", "--images", str(clean / "im"), "--masks", str(clean / "gt"),
                    "--on-error", "skip", "--log-dir", str(logs)])
    out = capsys.readouterr()
    assert rc == 1 and "FAILED" in out.err
    assert str(clean / "im" / "s001.jpg") in out.out and str(clean / "gt" / "orphan.png") in out.out
    assert len(list(logs.glob("*.log"))) == 1


def test_cli_check_pairs_file_and_missing(clean, capsys):
    f = clean / "pairs.txt"
    f.write_text("im/s000.jpg\tgt/s000.png\n")
    assert data_main(["check", "--pairs", str(f)]) == 0
    assert data_main(["check", "--images", str(clean / "nope"), "--masks", str(clean)]) == 2
    assert "not found" in capsys.readouterr().err
    assert data_main(["check"]) == 2


def test_cli_check_data_config(tmp_path, capsys):
    rc = data_main(["check", "data=duts", f"data.root={tmp_path}"])
    err = capsys.readouterr().err
    assert rc == 2 and "DUTS-TR-Image" in err and "prepare_duts.py" in err
    make_pairs(tmp_path / "ECSSD" / "im", tmp_path / "ECSSD" / "gt", n=2)
    assert data_main(["check", "data=ecssd", f"data.root={tmp_path}"]) == 0
    (tmp_path / "ECSSD" / "gt" / "s000.png").write_bytes(b"")
    assert data_main(["check", "data=ecssd", f"data.root={tmp_path}"]) == 1
    assert str(tmp_path / "ECSSD" / "gt" / "s000.png") in capsys.readouterr().out
