"""The model zoo against careless mirrors and interrupted users (issue 19, items 2 and 9), with a
local HTTP server on 127.0.0.1: an HTML page or a wrong file answered with 200 is never cached
nor trusted, a checksum error says where the recorded checksum lives and ``salseg-models
forget`` resets it, a trickling mirror meets a deadline, stale ``.part`` files are cleaned, a
read-only cache gives a clear error (and still serves verified files offline), cached files
follow the umask, and Ctrl-C prints no traceback."""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from fixtures.predict.helpers import random_model, single_thread  # noqa: F401
from fixtures.zoo_server import ZooServer

from salseg.cli.models import main as models_main
from salseg.models.weights import save_state_dict
from salseg.zoo import catalogue
from salseg.zoo.cache import downloads_dir, home, recorded_pin
from salseg.zoo.catalogue import Source, ZooEntry

HTML = b"<!DOCTYPE html>\n<html><head><title>Google Drive - Quota exceeded</title></head></html>"


@pytest.fixture(autouse=True)
def zoo_home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("SALSEG_HOME", str(home))
    for var in ("SALSEG_OFFLINE", "SALSEG_ZOO_MIRROR", "SALSEG_DOWNLOAD_DEADLINE"):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture
def server():
    srv = ZooServer()
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict[str, bytes]:
    """Two different loadable U2-NetP files and an IS-Net one."""
    folder = tmp_path_factory.mktemp("w")
    return {name: save_state_dict(random_model(arch, seed=seed), folder / f"{name}.pth"
                                  ).read_bytes()
            for name, arch, seed in (("a", "u2netp", 1), ("b", "u2netp", 2),
                                     ("isnet", "isnet", 3))}


def register(monkeypatch, server, path: str, checksum: str | None = None,
             name: str = "tiny-unpinned") -> ZooEntry:
    """A catalogue entry with one (by default unpinned) ``.pth`` source on the test server."""
    filename = Path(path).name
    e = ZooEntry(name=name, architecture="u2netp", description="test", license="t",
                 training_data="t", paper="t",
                 sources=(Source(server.url(path), checksum, filename, "test drive",
                                 "unpinned" if checksum is None else ""),))
    monkeypatch.setitem(catalogue._BY_NAME, name, e)
    return e


def pins_path() -> Path:
    return home() / "zoo" / "pins.json"


def cached(name: str = "u.pth") -> Path:
    return downloads_dir() / name


# -- item 2: nothing but the right kind of file is trusted on first use --------------------------
@pytest.mark.parametrize("content_type", ["text/html; charset=utf-8", "application/octet-stream"])
def test_html_page_is_refused_by_name_and_not_pinned(server, monkeypatch, capsys, weights,
                                                     content_type):
    server.files["/u.pth"] = HTML
    server.content_types["/u.pth"] = content_type
    e = register(monkeypatch, server, "/u.pth")
    assert models_main(["download", e.name, "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "the server sent an HTML page" in err
    assert not cached().exists() and recorded_pin(e.sources[0]) is None
    # the genuine file is accepted afterwards (it was not refused by a garbage pin)
    server.files["/u.pth"] = weights["a"]
    server.content_types.pop("/u.pth")
    assert models_main(["download", e.name, "--no-progress"]) == 0
    assert cached().read_bytes() == weights["a"]
    assert recorded_pin(e.sources[0]) == "sha256:" + hashlib.sha256(weights["a"]).hexdigest()


def test_wrong_files_are_refused_before_pinning(server, monkeypatch, capsys, weights):
    e = register(monkeypatch, server, "/u.pth")
    for body, why in ((b"\x00junk" * 100, "not a loadable PyTorch checkpoint"),
                      (weights["isnet"], "does not fit u2netp")):
        server.files["/u.pth"] = body
        assert models_main(["download", e.name, "--no-progress"]) == 1
        assert why in capsys.readouterr().err
        assert not cached().exists() and recorded_pin(e.sources[0]) is None


def test_checksum_error_names_the_pin_file_and_forget_resets_it(server, monkeypatch, capsys,
                                                                 weights):
    e = register(monkeypatch, server, "/u.pth")
    server.files["/u.pth"] = weights["a"]
    assert models_main(["download", e.name, "--no-progress"]) == 0
    cached().unlink()
    server.files["/u.pth"] = weights["b"]  # the source now serves another file
    assert models_main(["download", e.name, "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert str(pins_path()) in err and f"salseg-models forget {e.name}" in err
    assert models_main(["forget", e.name]) == 0
    assert "recorded checksum" in capsys.readouterr().out
    assert recorded_pin(e.sources[0]) is None
    assert models_main(["download", e.name, "--no-progress"]) == 0
    assert cached().read_bytes() == weights["b"]
    # verify names the way out too
    cached().write_bytes(weights["a"])
    assert models_main(["verify"]) == 1
    out = capsys.readouterr().out
    assert "MISMATCH" in out and f"salseg-models forget {e.name}" in out


# -- item 9: downloads that hang, die, or land in odd caches ----------------------------------------
def test_a_trickling_mirror_meets_the_deadline(server, monkeypatch, capsys, weights):
    server.files["/u.pth"] = weights["a"][:200]
    server.trickle["/u.pth"] = 0.1  # one byte every 0.1 s: no read ever times out
    e = register(monkeypatch, server, "/u.pth", checksum="sha256:" + "0" * 64)
    monkeypatch.setenv("SALSEG_DOWNLOAD_DEADLINE", "1")
    start = time.monotonic()
    assert models_main(["download", e.name, "--no-progress"]) == 1
    assert time.monotonic() - start < 8  # the whole body would take 20 s
    err = capsys.readouterr().err
    assert "1 s deadline" in err and "SALSEG_DOWNLOAD_DEADLINE" in err
    assert sorted(p.name for p in downloads_dir().iterdir() if not p.name.endswith(".lock")) == []
    monkeypatch.setenv("SALSEG_DOWNLOAD_DEADLINE", "soon")
    assert models_main(["download", e.name, "--no-progress"]) == 1
    assert "SALSEG_DOWNLOAD_DEADLINE='soon'" in capsys.readouterr().err


def test_stale_part_files_are_removed_by_the_next_download(server, monkeypatch, weights):
    server.files["/u.pth"] = weights["a"]
    e = register(monkeypatch, server, "/u.pth")
    downloads_dir().mkdir(parents=True)
    stale = downloads_dir() / ".u.pth.k1ll3d.part"  # what a SIGKILLed download leaves
    stale.write_bytes(b"half")
    other = downloads_dir() / ".other.pth.x.part"  # another file's: not ours to touch
    other.write_bytes(b"x")
    assert models_main(["download", e.name, "--no-progress"]) == 0
    assert not stale.exists() and other.exists()


def test_cached_files_follow_the_umask(server, monkeypatch, weights, tmp_path):
    server.files["/u.pth"] = weights["a"]
    e = register(monkeypatch, server, "/u.pth")
    old = os.umask(0o022)
    try:
        assert models_main(["download", e.name, "--no-progress"]) == 0
        assert cached().stat().st_mode & 0o777 == 0o644
        assert (downloads_dir() / "u.pth.verified").stat().st_mode & 0o777 == 0o644
        # salseg-export --import-onnx writes its state dict per the umask too (issue 20.10)
        from salseg.cli.export import main as export_main
        from salseg.export.onnx import export_onnx

        onnx = export_onnx(random_model("u2netp", seed=1), tmp_path / "m.onnx", "u2netp",
                           trace_size=64, check=False).path
        for suffix in (".safetensors",):  # safetensors.save_file wrote 0600
            out = tmp_path / f"w{suffix}"
            assert export_main(["--import-onnx", str(onnx), "-o", str(out)]) == 0
            assert out.stat().st_mode & 0o777 == 0o644, suffix
    finally:
        os.umask(old)


@contextmanager
def read_only(folder: Path):
    """Make ``folder`` read-only: by its mode, or (root ignores modes) a read-only bind mount."""
    if os.geteuid() != 0:
        dirs = [folder, *(p for p in folder.rglob("*") if p.is_dir())]
        for d in dirs:
            d.chmod(0o555)
        try:
            yield
        finally:
            for d in dirs:
                d.chmod(0o755)
        return
    if subprocess.run(["mount", "--bind", str(folder), str(folder)],
                      capture_output=True).returncode != 0:
        pytest.skip("running as root without the right to mount: cannot make a read-only folder")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(folder), str(folder)], check=True,
                       capture_output=True)
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_read_only_cache(server, monkeypatch, capsys, weights, zoo_home):
    server.files["/u.pth"] = weights["a"]
    e = register(monkeypatch, server, "/u.pth", checksum="md5:" + hashlib.md5(
        weights["a"]).hexdigest())
    zoo_home.mkdir()
    with read_only(zoo_home):  # a download into it: a clear error, no traceback
        assert models_main(["download", e.name, "--no-progress"]) == 1
        err = capsys.readouterr().err
        assert f"cannot write to the model-zoo cache {downloads_dir()}" in err
        assert "SALSEG_HOME" in err
    assert models_main(["download", e.name, "--no-progress"]) == 0
    for lock in downloads_dir().glob("*.lock"):
        lock.unlink()
    capsys.readouterr()
    monkeypatch.setenv("SALSEG_OFFLINE", "1")
    with read_only(zoo_home):  # verified and cached: offline use needs no lock file
        assert models_main(["path", e.name]) == 0
        assert capsys.readouterr().out.strip() == str(cached())
    assert not list(downloads_dir().glob("*.lock"))


def test_ctrl_c_prints_no_traceback_and_leaves_no_part(server, weights, zoo_home, tmp_path):
    server.files["/u.pth"] = weights["a"][:400]
    server.trickle["/u.pth"] = 0.05
    script = (
        "import sys\n"
        "from salseg.zoo import catalogue\n"
        "from salseg.zoo.catalogue import Source, ZooEntry\n"
        f"e = ZooEntry(name='tiny', architecture='u2netp', description='t', license='t',"
        f" training_data='t', paper='t', sources=(Source({server.url('/u.pth')!r}, None,"
        " 'u.pth', 't', 'unpinned'),))\n"
        "catalogue._BY_NAME['tiny'] = e\n"
        "from salseg.cli.models import main\n"
        "print('started', flush=True)\n"
        "sys.exit(main(['download', 'tiny']))\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "SALSEG_HOME": str(zoo_home)})
    assert proc.stdout.readline().strip() == "started"
    deadline = time.monotonic() + 60
    while not server.hits and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # inside the transfer
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "interrupted" in err
    assert not list(downloads_dir().glob("*.part")) and not cached().exists()


@pytest.mark.parametrize("command", ["predict", "eval"])
def test_ctrl_c_during_a_download_by_salseg_predict(server, weights, zoo_home, tmp_path,
                                                    command):
    """salseg-predict --weights NAME / salseg-eval ckpt=NAME downloading: Ctrl-C exits 130
    without a traceback."""
    from PIL import Image

    Image.new("RGB", (16, 16)).save(tmp_path / "a.png")
    server.files["/u.pth"] = weights["a"][:400]
    server.trickle["/u.pth"] = 0.05
    if command == "predict":
        call = ("from salseg.cli.predict import main\n"
                f"sys.exit(main([{str(tmp_path / 'a.png')!r}, '-o', {str(tmp_path / 'out')!r},"
                " '--weights', 'tiny', '--device', 'cpu']))\n")
    else:
        call = ("from salseg.cli.eval import main\n"
                "sys.argv = ['salseg-eval', 'ckpt=tiny', 'data=custom',"
                f" 'data.images={tmp_path}', 'data.masks={tmp_path}',"
                f" 'hydra.run.dir={tmp_path / 'run'}']\n"
                "main()\n")
    script = (
        "import sys\n"
        "from salseg.zoo import catalogue\n"
        "from salseg.zoo.catalogue import Source, ZooEntry\n"
        f"e = ZooEntry(name='tiny', architecture='u2netp', description='t', license='t',"
        f" training_data='t', paper='t', sources=(Source({server.url('/u.pth')!r}, None,"
        " 'u.pth', 't', 'unpinned'),))\n"
        "catalogue._BY_NAME['tiny'] = e\n"
        "print('started', flush=True)\n" + call)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "SALSEG_HOME": str(zoo_home)})
    assert proc.stdout.readline().strip() == "started"
    deadline = time.monotonic() + 120
    while not server.hits and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "interrupted" in err
    assert not list(downloads_dir().glob("*.part"))


def test_unpinned_safetensors_must_fit_the_architecture(server, monkeypatch, capsys, tmp_path):
    e = register(monkeypatch, server, "/u.safetensors")
    for arch, ok in (("isnet", False), ("u2netp", True)):
        data = save_state_dict(random_model(arch, seed=5), tmp_path / f"{arch}.safetensors"
                               ).read_bytes()
        server.files["/u.safetensors"] = data
        assert models_main(["download", e.name, "--no-progress"]) == (0 if ok else 1)
        if not ok:
            assert "the safetensors file does not fit u2netp" in capsys.readouterr().err
            assert recorded_pin(e.sources[0]) is None
    assert cached("u.safetensors").read_bytes() == data
