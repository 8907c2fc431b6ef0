"""salseg-predict --num-processes: 2 CPU processes write the same files as one; a restarted
run only predicts what is missing."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from salseg.cli.predict import main
from salseg.models import create_model
from salseg.predict.parallel import shard


def test_shard_is_a_strided_partition():
    items = list(range(7))
    parts = [shard(items, r, 3) for r in range(3)]
    assert parts == [[0, 3, 6], [1, 4], [2, 5]]
    assert sorted(sum(parts, [])) == items


def test_two_processes_match_one_and_restart_skips_finished(tmp_path, capsys):
    rng = np.random.default_rng(0)
    src = tmp_path / "in"
    src.mkdir()
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (40 + i, 56, 3), dtype=np.uint8)).save(src / f"im{i}.png")
    torch.manual_seed(0)
    weights = tmp_path / "u2netp.pth"
    torch.save(create_model("u2netp").state_dict(), weights)
    common = [str(src), "--weights", str(weights), "--model", "u2netp", "--device", "cpu",
              "--input-size", "64", "--quiet"]
    assert main(common + ["-o", str(tmp_path / "one")]) == 0
    assert main(common + ["-o", str(tmp_path / "two"), "--num-processes", "2"]) == 0
    one = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert one == sorted(p.name for p in (tmp_path / "two").iterdir()) and len(one) == 5
    for name in one:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    # an interrupted run: two outputs missing; the restart writes only those
    (tmp_path / "two" / one[0]).unlink()
    (tmp_path / "two" / one[3]).unlink()
    capsys.readouterr()
    assert main(common + ["-o", str(tmp_path / "two"), "--num-processes", "2"]) == 0
    report = capsys.readouterr().err
    assert "2 predicted" in report and "3 skipped" in report
    for name in one:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
