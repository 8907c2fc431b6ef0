"""salseg-predict refuses what would lose data or waste a run, before any model work (issue 10
items 1 and 12): outputs that are input files (every spelling of the same file), unreadable or
empty ONNX weights (exit 2, one line naming the file), and output folders that are files or
cannot be written."""
from __future__ import annotations

import os

import pytest
from fixtures.predict.helpers import object_image, random_model, save, single_thread  # noqa: F401

from salseg.cli.predict import main
from salseg.models.weights import save_state_dict
from salseg.predict.batch import SaveOptions, predict_files
from salseg.predict.inputs import collect_inputs, output_clashes

SMALL = ["--input-size", "32", "--device", "cpu", "-q"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return save_state_dict(random_model("u2netp", seed=3),
                           tmp_path_factory.mktemp("w") / "u2netp.pth")


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if the model is even built: refusals must come first."""
    def boom(*args, **kwargs):
        raise AssertionError("the model was built before the refusal")

    monkeypatch.setattr("salseg.predict.predictor.Predictor.__init__", boom)


def _run(args, capsys):
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def _images(folder, names=("a", "b")):
    return {n: save(object_image(20, 24, seed=i), folder / f"{n}.png").read_bytes()
            for i, n in enumerate(names)}


@pytest.mark.parametrize("overwrite", [False, True])
def test_output_folder_equal_to_input_folder_is_refused(tmp_path, weights, capsys, no_model,
                                                        overwrite):
    src = tmp_path / "same"
    before = _images(src)
    code, err = _run([src, "-o", src, "--weights", weights, "--model", "u2netp", *SMALL]
                     + (["--overwrite"] if overwrite else []), capsys)
    assert code == 2
    assert "would be written over input" in err
    assert str(src / "a.png") in err and str(src / "b.png") in err
    assert "skipped" not in err  # never a silent "skip" of an input as its own output
    assert {n: (src / f"{n}.png").read_bytes() for n in before} == before


def test_every_spelling_of_the_same_file_is_found(tmp_path, monkeypatch, capsys, no_model):
    src = tmp_path / "data"
    _images(src, ("a",))
    os.symlink(src, tmp_path / "link")
    monkeypatch.chdir(tmp_path)
    # relative input through a symlinked folder, absolute output folder
    items, _ = collect_inputs(["link"])
    assert output_clashes(items, src.resolve(), ("mask",))
    # a list file naming the image with ".." in the path
    (tmp_path / "list.txt").write_text("data/../data/a.png\n")
    items, _ = collect_inputs(["list.txt"])
    assert output_clashes(items, "data", ("mask",))
    # a hard link: another name for the same file
    (tmp_path / "h").mkdir()
    os.link(src / "a.png", tmp_path / "h" / "a.png")
    items, _ = collect_inputs(["h/a.png"])
    assert output_clashes(items, "data", ("mask",))
    # other output kinds land in sub-folders: an input there clashes too
    _images(tmp_path / "out" / "cutout", ("c",))
    code, err = _run([tmp_path / "out" / "cutout" / "c.png", "-o", "out", "--save", "mask,cutout",
                      "--weights", "w.pth"], capsys)
    assert code == 2 and "cutout/c.png" in err
    # no clash: another folder
    items, _ = collect_inputs(["link"])
    assert output_clashes(items, tmp_path / "elsewhere", ("mask", "cutout")) == []


def test_library_loop_refuses_too(tmp_path, weights):
    from salseg.predict import Predictor

    src = tmp_path / "same"
    before = _images(src, ("a",))
    items, _ = collect_inputs([str(src)])
    with pytest.raises(ValueError, match="would be written over input"):
        predict_files(Predictor(weights, model="u2netp", input_size=32, device="cpu"), items,
                      src, SaveOptions(overwrite=True), progress=False)
    assert (src / "a.png").read_bytes() == before["a"]


def test_bad_onnx_weights_exit_2_with_one_line(tmp_path, capsys):
    src = tmp_path / "in"
    _images(src, ("a",))
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"this is not a protobuf \xff\xff\xff")
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    for backend in ("onnx", "torch"):
        for path, words in ((garbage, "not a readable ONNX file"), (empty, "empty (0 bytes)")):
            code, err = _run([src, "-o", tmp_path / "out", "--weights", path,
                              "--backend", backend, *SMALL], capsys)
            assert code == 2, (backend, path, err)
            assert "Traceback" not in err and "no convolutions" not in err
            line = [x for x in err.splitlines() if x.startswith("salseg-predict: error:")]
            assert len(line) == 1 and str(path) in line[0], err
            if backend == "onnx" or path == garbage:
                assert words in line[0], err


def test_output_folder_checked_before_the_model(tmp_path, capsys, no_model, monkeypatch):
    src = tmp_path / "in"
    _images(src, ("a",))
    as_file = tmp_path / "out.png"
    as_file.write_bytes(b"x")
    code, err = _run([src, "-o", as_file, "--weights", "w.pth", *SMALL], capsys)
    assert code == 2 and "is not a folder" in err and str(as_file) in err
    code, err = _run([src, "-o", as_file / "sub", "--weights", "w.pth", *SMALL], capsys)
    assert code == 2 and "cannot write" in err

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("salseg.atomic.mkstemp", read_only)  # a read-only mount, even for root
    code, err = _run([src, "-o", tmp_path / "ro", "--weights", "w.pth", *SMALL], capsys)
    assert code == 2 and "cannot write into it (Permission denied)" in err


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores modes")
def test_read_only_output_folder(tmp_path, capsys, no_model):
    src = tmp_path / "in"
    _images(src, ("a",))
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        code, err = _run([src, "-o", ro, "--weights", "w.pth", *SMALL], capsys)
    finally:
        ro.chmod(0o755)
    assert code == 2 and "cannot write" in err
