"""Prepare scripts: download with checksums from a local HTTP server, extraction, verification."""
from __future__ import annotations

import functools
import hashlib
import http.server
import importlib.util
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest
from test_data_helpers import isolated_cache, make_pairs  # noqa: F401

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _zip_dir(src: Path, arc: Path) -> str:
    with zipfile.ZipFile(arc, "w") as z:
        for f in sorted(src.rglob("*")):
            z.write(f, f.relative_to(src.parent))
    return hashlib.sha256(arc.read_bytes()).hexdigest()


@pytest.fixture
def duts_archives(tmp_path):
    src = tmp_path / "src"
    make_pairs(src / "DUTS-TR" / "DUTS-TR-Image", src / "DUTS-TR" / "DUTS-TR-Mask", n=3)
    make_pairs(src / "DUTS-TE" / "DUTS-TE-Image", src / "DUTS-TE" / "DUTS-TE-Mask", n=2)
    serve = tmp_path / "serve"
    serve.mkdir()
    sums = {n: _zip_dir(src / n, serve / f"{n}.zip") for n in ("DUTS-TR", "DUTS-TE")}
    return serve, sums


@pytest.fixture
def http_server():
    servers = []

    def start(directory: Path) -> str:
        handler = functools.partial(QuietHandler, directory=str(directory))
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}"

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass


def test_prepare_duts_download_with_checksums(tmp_path, duts_archives, http_server, capsys):
    serve, sums = duts_archives
    base = http_server(serve)
    root = tmp_path / "root"
    mod = _load("prepare_duts")
    rc = mod.main(["--root", str(root), "--download", "--url-base", base, "--sha256",
                   f"DUTS-TR.zip={sums['DUTS-TR']}", f"DUTS-TE.zip={sums['DUTS-TE']}",
                   "--no-count-check", "--workers", "0"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert f"data.root={root.resolve()}" in out.out
    assert len(list((root / "DUTS" / "DUTS-TR" / "DUTS-TR-Image").iterdir())) == 3
    assert (root / "downloads" / "DUTS-TR.zip.sha256").read_text().startswith(sums["DUTS-TR"])
    # a second run reuses the verified downloads and keeps the extracted folders
    assert mod.main(["--root", str(root), "--download", "--url-base", base,
                     "--no-count-check", "--workers", "0"]) == 0
    assert "reusing" in capsys.readouterr().err
    # counts are enforced by default (3 != 10,553)
    assert mod.main(["--root", str(root), "--workers", "0"]) == 1


def test_prepare_duts_checksum_mismatch_fails(tmp_path, duts_archives, http_server, capsys):
    serve, _ = duts_archives
    base = http_server(serve)
    root = tmp_path / "root"
    rc = _load("prepare_duts").main(["--root", str(root), "--download", "--url-base", base,
                                     "--sha256", "DUTS-TR.zip=" + "0" * 64, "--no-count-check"])
    assert rc == 2 and "checksum mismatch" in capsys.readouterr().err
    assert not (root / "downloads" / "DUTS-TR.zip").exists()
    assert not list((root / "downloads").glob("*.part"))


def test_prepare_duts_from_extracted_folder_and_bad_file(tmp_path, capsys):
    d = tmp_path / "ds" / "DUTS"
    make_pairs(d / "DUTS-TR" / "DUTS-TR-Image", d / "DUTS-TR" / "DUTS-TR-Mask", n=2)
    make_pairs(d / "DUTS-TE" / "DUTS-TE-Image", d / "DUTS-TE" / "DUTS-TE-Mask", n=2)
    mod = _load("prepare_duts")
    assert mod.main(["--from", str(d / "DUTS-TR"), "--no-count-check", "--workers", "0"]) == 0
    assert f"data.root={(tmp_path / 'ds').resolve()}" in capsys.readouterr().out
    (d / "DUTS-TE" / "DUTS-TE-Mask" / "s001.png").write_bytes(b"")
    assert mod.main(["--from", str(tmp_path / "ds"), "--no-count-check", "--workers", "0"]) == 1
    assert "s001.png" in capsys.readouterr().out


def test_prepare_dis5k_from_tar_archive(tmp_path, capsys):
    src = tmp_path / "src" / "DIS5K"
    for split in ("DIS-VD", "DIS-TE1"):
        make_pairs(src / split / "im", src / split / "gt", n=2)
    arc = tmp_path / "DIS5K.tar.gz"
    with tarfile.open(arc, "w:gz") as t:
        t.add(src, arcname="DIS5K")
    root = tmp_path / "root"
    rc = _load("prepare_dis5k").main(["--root", str(root), "--from", str(arc), "--splits",
                                      "DIS-VD", "DIS-TE1", "--no-count-check", "--workers", "0"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert (root / "DIS5K" / "DIS-VD" / "im").is_dir() and f"data.root={root.resolve()}" in out.out
    # a missing split is one clear message
    rc = _load("prepare_dis5k").main(["--root", str(root), "--no-count-check"])
    assert rc == 2 and "salseg-prepare-dis5k: error:" in (err := capsys.readouterr().err) and "DIS-TR" in err


def test_unsafe_archive_rejected(tmp_path):
    from salseg.data.errors import DataError
    from salseg.data.prepare import extract_splits

    arc = tmp_path / "evil.zip"
    with zipfile.ZipFile(arc, "w") as z:
        z.writestr("../DUTS-TR/x.txt", "boom")
    with pytest.raises(DataError, match="unsafe path"):
        extract_splits(arc, tmp_path / "out", ("DUTS-TR",))
