"""salseg-predict / salseg-eval through their console scripts on careless input (issue 19 items
10-13, issue 20 item 10): the true count after Ctrl-C with --num-processes, a folder shadowing a
zoo name, a missing ``u2net.pth`` that meant the zoo name, a notes file that is not a list, an
output that is a dangling symlink, and ``input_size=<int>`` in salseg-eval."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import time

import numpy as np
import pytest
from PIL import Image


def _images(folder, n: int, size: int = 40) -> list:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / f"im{i:03d}.png"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


class _Run:
    def __init__(self, returncode: int, stderr: str) -> None:
        self.returncode, self.stderr = returncode, stderr


@pytest.fixture
def predict(capsys, monkeypatch):
    """salseg-predict's entry point in this process (the console script calls the same
    ``main``; in-process keeps these tests fast)."""
    from salseg.cli.predict import main

    def run(*args, cwd=None) -> _Run:
        if cwd is not None:
            monkeypatch.chdir(cwd)
        capsys.readouterr()
        code = main([str(a) for a in args])
        return _Run(code, capsys.readouterr().err)

    return run


RANDOM = ["--random-weights", "--model", "u2netp", "--input-size", "64", "--device", "cpu", "-q"]


@pytest.mark.slow  # three processes start and predict (~1 min on 2 cores)
def test_interrupted_parallel_run_reports_the_true_count(tmp_path):
    """Issue 19.11: Ctrl-C during --num-processes 2 reported '0 file(s) written'."""
    _images(tmp_path / "in", 400, size=32)
    out = tmp_path / "out"
    proc = subprocess.Popen(["salseg-predict", str(tmp_path / "in"), "-o", str(out), *RANDOM,
                             "--num-processes", "2"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if out.is_dir() and len(list(out.glob("*.png"))) >= 6:
            break
        time.sleep(0.1)
    assert proc.poll() is None, "finished before it could be interrupted"
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole foreground process group
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-2000:]
    on_disk = len(list(out.glob("*.png")))
    found = re.search(r"(\d+) image\(s\): (\d+) predicted \((\d+) file\(s\) written\)", err)
    assert found, err[-2000:]
    assert int(found.group(3)) == on_disk and int(found.group(2)) == on_disk, err[-2000:]
    assert 0 < on_disk < 400 and int(found.group(1)) == 400


def test_weights_folder_shadowing_a_zoo_name_and_a_missing_pth(tmp_path, predict):
    """Issue 19.12 and 20.10: say that the path is a folder shadowing the name; suggest the
    zoo name for a missing u2net.pth."""
    _images(tmp_path, 1)
    (tmp_path / "u2netp").mkdir()
    proc = predict("im000.png", "-o", "out", "--weights", "u2netp", cwd=tmp_path)
    assert proc.returncode == 2
    assert "u2netp: is a folder, not a checkpoint file" in proc.stderr
    assert "shadows the model-zoo name 'u2netp'" in proc.stderr
    proc = predict("im000.png", "-o", "out", "--weights", "u2net.pth", cwd=tmp_path)
    assert proc.returncode == 2
    assert "did you mean the model-zoo name 'u2net'?" in proc.stderr


def test_a_text_file_is_not_read_as_a_list_of_paths(tmp_path, predict):
    """Issue 20.10: salseg-predict notes.txt read the notes as image paths."""
    _images(tmp_path / "in", 1)
    notes = tmp_path / "notes.txt"
    notes.write_text("Meeting notes\nthe model is fine\n")
    proc = predict(notes, "-o", tmp_path / "out", *RANDOM)
    assert proc.returncode == 1
    assert "notes.txt: not a list of images" in proc.stderr
    assert "the model is fine" not in proc.stderr.replace("'Meeting notes'", "")
    good = tmp_path / "list.txt"  # a real list still works
    good.write_text("# inputs\nin/im000.png\n")
    proc = predict(good, "-o", tmp_path / "out", *RANDOM)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "im000.png").is_file()


def test_dangling_symlink_output_is_reported(tmp_path, predict):
    """Issue 19.13: an output path that is a dangling symlink was silently not written
    (exit 0)."""
    _images(tmp_path / "in", 2)
    out = tmp_path / "out"
    out.mkdir()
    (out / "im000.png").symlink_to(tmp_path / "gone" / "x.png")
    proc = predict(tmp_path / "in", "-o", out, *RANDOM)
    assert proc.returncode == 1
    assert "im000.png is a dangling symbolic link" in proc.stderr
    assert (out / "im001.png").is_file() and (out / "im000.png").is_symlink()
    proc = predict(tmp_path / "in", "-o", out, *RANDOM, "--overwrite")
    assert proc.returncode == 0, proc.stderr
    assert not (out / "im000.png").is_symlink() and (out / "im000.png").is_file()


def test_eval_input_size_int_is_a_square_size(tmp_path):
    """Issue 19.10: salseg-eval ... input_size=64 gave TypeError (the slow test of
    test_perf_parallel_eval.py runs it through the console script)."""
    from test_eval_model import _compose, _custom_set

    from salseg.cli.eval import run
    from salseg.evaluation import EvaluationError

    images, masks = _custom_set(tmp_path, n=2)
    common = ["random_weights=true", "model=u2netp", "data=custom", f"data.images={images}",
              f"data.masks={masks}", "data.val_split=0", "progress=false", "workers=1",
              "plots=false", "html=false", "device=cpu"]
    square = run(_compose([*common, "input_size=64"]), tmp_path / "a")
    assert square == run(_compose([*common, "input_size=[64,64]"]), tmp_path / "b")
    with pytest.raises(EvaluationError, match=r"input_size=.*expected an int or \[height, width\]"):
        run(_compose([*common, "input_size=[64]"]), tmp_path / "c")


@pytest.mark.parametrize("arg", ["u2netp"])
def test_existing_file_named_like_a_zoo_name_still_wins(tmp_path, arg, predict):
    """The shadowing rule itself is unchanged: an existing file wins over the name."""
    (tmp_path / arg).write_bytes(b"")
    _images(tmp_path, 1)
    proc = predict("im000.png", "-o", "out", "--weights", arg, cwd=tmp_path)
    assert proc.returncode == 2 and "empty" in proc.stderr
