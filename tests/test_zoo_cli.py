"""salseg-models (list / info / download / verify / path), the published tables, and
salseg-eval model mode with a zoo name writing the paper row and the difference."""
from __future__ import annotations

import hashlib
import json

import pytest
import torch
from fixtures.predict.helpers import random_model, single_thread  # noqa: F401
from fixtures.zoo_server import ZooServer

from salseg.cli.models import main as models_main
from salseg.models.weights import save_state_dict
from salseg.zoo import catalogue, published
from salseg.zoo.catalogue import Source, ZooEntry


@pytest.fixture(autouse=True)
def zoo_home(tmp_path, monkeypatch):
    monkeypatch.setenv("SALSEG_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SALSEG_OFFLINE", raising=False)
    monkeypatch.delenv("SALSEG_ZOO_MIRROR", raising=False)


@pytest.fixture
def served(tmp_path, monkeypatch):
    """A tiny U2-NetP entry 'tiny-u2netp' served by a local HTTP server."""
    server = ZooServer()
    data = save_state_dict(random_model("u2netp", seed=4), tmp_path / "u.pth").read_bytes()
    server.files["/u.pth"] = data
    e = ZooEntry(name="tiny-u2netp", architecture="u2netp", description="tiny test model",
                 sources=(Source(server.url("/u.pth"), "md5:" + hashlib.md5(data).hexdigest(),
                                 "u.pth", "test server"),),
                 license="test", training_data="none", paper="none",
                 published=("test/tiny",), input_size=(64, 64))
    monkeypatch.setitem(catalogue._BY_NAME, e.name, e)
    monkeypatch.setitem(published.TABLES, "test/tiny", (
        published.PublishedRow("tinyset", {"max_f": 0.5, "mae": 0.25}, "made up for the test"),))
    yield server, data
    server.close()


def test_list_and_info(capsys):
    assert models_main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("u2netp", "isnet-anime", "u2net_cloth_seg", "briaai/RMBG-1.4"):
        assert name in out
    assert models_main(["info", "briaai/RMBG-1.4"]) == 0
    out = capsys.readouterr().out
    assert "NON-COMMERCIAL" in out and "commercial use: NO" in out and "sha256:893c16c3" in out
    assert models_main(["info", "u2net_human_seg"]) == 0
    assert "UNPINNED" in capsys.readouterr().out
    assert models_main(["info", "u2net_cloth_seg"]) == 0
    out = capsys.readouterr().out
    assert "argmax over classes background, upper, lower, full" in out
    assert "768x768" in out
    assert models_main(["info", "nope"]) == 2


def test_download_path_verify(served, capsys, tmp_path):
    server, data = served
    assert models_main(["download", "tiny-u2netp", "--no-progress"]) == 0
    path = capsys.readouterr().out.strip().split(": ", 1)[1]
    assert open(path, "rb").read() == data
    assert models_main(["path", "tiny-u2netp"]) == 0
    assert capsys.readouterr().out.strip() == path
    assert models_main(["verify"]) == 0
    assert "1 cached file(s) checked, 0 mismatch" in capsys.readouterr().out
    with open(path, "ab") as fh:
        fh.write(b"bit rot")
    assert models_main(["verify"]) == 1
    out = capsys.readouterr().out
    assert "MISMATCH" in out and "md5:" in out
    assert len(server.hits) == 1


def test_download_failure_exit_code(monkeypatch, capsys):
    e = ZooEntry(name="tiny-broken", architecture="u2netp", description="x",
                 sources=(Source("http://127.0.0.1:9/x.pth", "md5:" + "0" * 32, "x.pth", "t"),),
                 license="t", training_data="t", paper="t")
    monkeypatch.setitem(catalogue._BY_NAME, e.name, e)
    assert models_main(["download", "tiny-broken", "--no-progress"]) == 1
    assert "127.0.0.1:9/x.pth" in capsys.readouterr().err


def test_published_tables_are_consistent():
    for key in published.TABLES:
        for row in published.rows_for(key):
            assert row.source
            assert set(row.scores) <= set(published.METRIC_KEYS)
    for e in catalogue.entries():
        for key in e.published:
            published.rows_for(key)


def test_eval_model_mode_writes_paper_rows(served, tmp_path):
    from hydra import compose, initialize_config_dir
    from PIL import Image

    from salseg.cli.eval import run
    from salseg.config import CONFIG_DIR

    images, masks = tmp_path / "tinyset" / "images", tmp_path / "tinyset" / "masks"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    for i in range(2):
        img = (torch.rand(40, 48, 3, generator=g) * 255).to(torch.uint8).numpy()
        mask = torch.zeros(40, 48, dtype=torch.uint8)
        mask[10:30, 12:36] = 255
        Image.fromarray(img).save(images / f"im{i}.png")
        Image.fromarray(mask.numpy()).save(masks / f"im{i}.png")
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("eval", overrides=[
            "ckpt=tiny-u2netp", "data=custom", f"data.images={images}", f"data.masks={masks}",
            "data.val_split=0", "data.name=tinyset", "progress=false", "workers=1",
            "plots=false"])
    out = tmp_path / "run"
    doc = run(cfg, out)
    (name, scores), = doc.items()
    comp = json.loads((out / "paper_comparison.json").read_text())
    assert comp["model"] == "tiny-u2netp"
    row, = comp["rows"]
    assert row["metrics"]["max_f"]["paper"] == 0.5
    assert row["metrics"]["max_f"]["diff"] == round(round(scores["max_f"], 3) - 0.5, 3)
    md = (out / "results.md").read_text()
    assert "Paper vs measured: tiny-u2netp" in md and "made up for the test" in md


def test_export_and_finetune_init_take_a_name(served, tmp_path):
    from salseg.cli.export import main as export_main
    from salseg.tasks import TrainingTask

    out = tmp_path / "tiny.onnx"
    assert export_main(["--weights", "tiny-u2netp", "-o", str(out), "--trace-size", "64",
                        "--no-check"]) == 0
    assert out.is_file()
    task = TrainingTask(name="u2netp", init_weights="tiny-u2netp")
    assert not task.freeze_bn  # a .pth source: real BatchNorm statistics
    _, data = served
    (tmp_path / "ref.pth").write_bytes(data)
    from salseg.weights.load import read_state_dict

    for k, v in read_state_dict(tmp_path / "ref.pth").items():
        assert torch.equal(task.model.state_dict()[k], v), k


def test_path_never_downloads(served, capsys, tmp_path):
    """Issue 20 item 9: docs/zoo.md says to put a file where ``salseg-models path NAME`` says;
    the command printed that only after downloading (and exited 1 when it could not)."""
    server, _ = served
    assert models_main(["path", "tiny-u2netp"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == str(tmp_path / "home" / "zoo" / "downloads" / "u.pth")
    assert "not in the cache yet: put u.pth at this path" in captured.err
    assert server.hits == []


def test_path_console_script_prints_where_to_put_the_file(tmp_path):
    import os
    import subprocess

    env = dict(os.environ, SALSEG_HOME=str(tmp_path / "home"), SALSEG_OFFLINE="1")
    proc = subprocess.run(["salseg-models", "path", "u2netp"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    target = tmp_path / "home" / "zoo" / "downloads" / "u2netp.pth"
    assert proc.stdout.strip() == str(target)
    assert "or one of: u2netp.onnx" in proc.stderr
    assert not target.parent.exists()  # nothing written, nothing fetched
    # a file put there by hand is found (and verified against the entry's checksum)
    target.parent.mkdir(parents=True)
    target.write_bytes(b"not the real weights")
    bad = subprocess.run(["salseg-models", "path", "u2netp"], env=env, capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode == 1 and "checksum" in bad.stderr
