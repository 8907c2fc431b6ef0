"""salseg-serve's HTTP API against a real server on 127.0.0.1 (random port): every endpoint,
every error code, rembg's form fields, batching, and byte-identical outputs to salseg-predict."""
from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from fixtures.predict.helpers import single_thread  # noqa: F401
from PIL import Image
from serve_helpers import INPUT_SIZE, ServerThread, make_image, tiny_weights

from salseg.cli.predict import main as predict_main
from salseg.predict.predictor import Predictor
from salseg.serve.app import ServedModel, ServeSettings, create_app
from salseg.serve.batching import Batcher, QueueFull

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return tiny_weights(tmp_path_factory.mktemp("w"))


@pytest.fixture(scope="module")
def predictor(weights):
    return Predictor(weights, input_size=INPUT_SIZE, device="cpu")


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    return make_image(tmp_path_factory.mktemp("img") / "photo.jpg", quality=92)


def _app(predictor, **settings):
    return create_app([ServedModel("tiny", predictor, "u2netp_tiny.pth")],
                      ServeSettings(**settings))


@pytest.fixture(scope="module")
def server(predictor):
    with ServerThread(_app(predictor, max_batch=1)) as url:
        yield url


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server, timeout=120) as c:
        yield c


def _post(client, path: Path, params=None, **data):
    return client.post("/api/remove", files={"file": (path.name, path.read_bytes())},
                       data={k: str(v) for k, v in data.items()}, params=params)


def test_health_models_page_and_docs(client):
    health = client.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    models = client.get("/api/models").json()
    assert models["default"] == "tiny"
    assert models["models"][0]["architecture"] == "u2netp"
    assert models["models"][0]["input_size"] == [INPUT_SIZE, INPUT_SIZE]
    assert set(models["outputs"]) >= {"mask", "cutout", "composite"}
    spec = client.get("/openapi.json").json()
    fields = spec["components"]["schemas"]
    assert "/api/remove" in spec["paths"]
    body = next(s for n, s in fields.items() if "remove" in n.lower())
    assert {"file", "model", "om", "ppm", "bgc", "output", "threshold"} <= set(body["properties"])
    for page in ("/", "/docs"):
        r = client.get(page)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        # nothing loaded from other hosts (no CDN): no absolute URL in src/href/url()/fetch
        assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//|url\(["']?(https?:)?//|"""
                             r"""fetch\(["'](https?:)?//|<link""", r.text), page
    assert client.get("/redoc").status_code == 404


OPTION_SETS = [
    ([], {}),
    (["--threshold", "0.4", "--largest-component", "--fill-holes", "--erode", "1", "--feather",
      "1.5", "--decontaminate", "--bg-color", "#20c040"],
     {"threshold": 0.4, "largest_component": "true", "fill_holes": "true", "erode": 1,
      "feather": 1.5, "decontaminate": "true", "bg_color": "#20c040"}),
    (["--raw-sigmoid"], {"raw_sigmoid": "true"}),
]


@pytest.mark.parametrize("cli_args,form", OPTION_SETS, ids=["default", "refined", "sigmoid"])
def test_outputs_byte_identical_to_salseg_predict(client, weights, image, tmp_path, cli_args,
                                                  form):
    out = tmp_path / "out"
    code = predict_main([str(image), "-o", str(out), "--weights", str(weights), "--input-size",
                         str(INPUT_SIZE), "--device", "cpu", "-q", "--save",
                         "mask,cutout,composite,preview", *cli_args])
    assert code == 0
    files = {"mask": out / "photo.png", "cutout": out / "cutout" / "photo.png",
             "composite": out / "composite" / "photo.png", "preview": out / "preview" / "photo.png"}
    for kind, path in files.items():
        r = _post(client, image, output=kind, **form)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "image/png"
        assert r.headers["x-salseg-model"] == "tiny"
        assert r.content == path.read_bytes(), kind


def test_grayscale_and_alpha_uploads_match_salseg_predict(client, weights, tmp_path):
    from fixtures.predict.helpers import object_image

    rgb = object_image(50, 70, seed=4)
    Image.fromarray(rgb[..., 1]).save(tmp_path / "gray.png")
    Image.fromarray(np.dstack([rgb, rgb[..., :1]])).save(tmp_path / "rgba.png")
    out = tmp_path / "out"
    assert predict_main([str(tmp_path / "gray.png"), str(tmp_path / "rgba.png"), "-o", str(out),
                         "--weights", str(weights), "--input-size", str(INPUT_SIZE), "--device",
                         "cpu", "-q", "--save", "mask,cutout"]) == 0
    for name in ("gray", "rgba"):
        for kind, path in (("mask", out / f"{name}.png"), ("cutout", out / "cutout" / f"{name}.png")):
            r = _post(client, tmp_path / f"{name}.png", output=kind)
            assert r.status_code == 200 and r.content == path.read_bytes(), (name, kind)


def test_rembg_form_fields(client, image):
    cutout = _post(client, image)  # rembg's default answer: the cut-out
    assert cutout.content == _post(client, image, output="cutout").content
    assert _post(client, image, om="true").content == _post(client, image, output="mask").content
    green = _post(client, image, output="composite", bg_color="0,255,0").content
    assert _post(client, image, params={"bgc": "0,255,0,255"}).content == green  # query, as rembg
    assert _post(client, image, bgc="0,255,0").content == green
    assert _post(client, image, ppm="true", om="true").content == \
        _post(client, image, threshold=0.5, output="mask").content
    assert _post(client, image, model="u2netp").status_code == 200  # architecture alias
    r = _post(client, image, a="true")
    assert r.status_code == 422 and "alpha matting" in r.json()["detail"]
    r = _post(client, image, params={"bgc": "0,255,0,128"})
    assert r.status_code == 422 and "opaque" in r.json()["detail"]


def test_request_errors(client, image, tmp_path):
    r = _post(client, image, model="nope")
    assert r.status_code == 404 and "nope" in r.json()["detail"] and "tiny" in r.json()["detail"]
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    r = _post(client, text)
    assert r.status_code == 415
    assert r.json()["detail"] == "notes.txt: not a readable image (unknown format or corrupt header)"
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    r = _post(client, empty)
    assert r.status_code == 415 and "empty" in r.json()["detail"]
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(image.read_bytes()[:600])
    assert _post(client, truncated).status_code == 415
    for bad in ({"erode": -1}, {"threshold": 2}, {"output": "bogus"}, {"bg_color": "nocolour"},
                {"om": "true", "output": "composite"}):
        r = _post(client, image, **bad)
        assert r.status_code == 422, bad
    assert client.post("/api/remove", data={"model": "tiny"}).status_code == 422  # no file
    assert client.get("/api/remove", params={"url": "http://127.0.0.1/x.jpg"}).status_code == 405


def test_size_limits(predictor, image):
    with ServerThread(_app(predictor, max_upload=1000, max_pixels=1000)) as url, \
            httpx.Client(base_url=url, timeout=60) as c:
        r = _post(c, image)  # declared length above the limit: refused before reading
        assert r.status_code == 413 and "1000 bytes" in r.json()["detail"]

        def chunks():  # no Content-Length: counted while streaming
            yield b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.jpg\"\r\n\r\n"
            for _ in range(10):
                yield b"\0" * 500

        r = c.post("/api/remove", content=chunks(),
                   headers={"content-type": "multipart/form-data; boundary=b"})
        assert r.status_code == 413
    small = image.parent / "small.png"
    make_image(small, size=(40, 30))
    with ServerThread(_app(predictor, max_pixels=1000)) as url, \
            httpx.Client(base_url=url, timeout=60) as c:
        r = _post(c, small)
        assert r.status_code == 413 and "40x30" in r.json()["detail"]


class Gate:
    """Replaces a batcher's ``infer``: holds every batch until ``open()``."""

    def __init__(self, batcher: Batcher) -> None:
        self.batcher = batcher
        self.infer = batcher.infer
        self.event = threading.Event()
        self.entered = threading.Event()
        self.sizes: list[int] = []
        batcher.infer = self

    def __call__(self, batch):
        self.sizes.append(len(batch))
        self.entered.set()
        self.event.wait(60)
        return self.infer(batch)

    def open(self) -> None:
        self.event.set()


def _in_thread(fn):
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("r", fn()), daemon=True)
    thread.start()
    return thread, result


def test_queue_full_timeout_and_batching(predictor, image):
    app = _app(predictor, max_batch=4, max_wait=0.0, max_queue=5, timeout=600)
    gate = Gate(app.state.models["tiny"].batcher)
    with ServerThread(app) as url, httpx.Client(base_url=url, timeout=120) as c:
        first, r1 = _in_thread(lambda: _post(httpx.Client(base_url=url, timeout=120), image))
        assert gate.entered.wait(60)  # the first batch (one image) is held in the model
        waiting = [_in_thread(lambda: _post(httpx.Client(base_url=url, timeout=120), image))
                   for _ in range(4)]
        deadline = time.monotonic() + 60
        while c.get("/health").json()["models"]["tiny"]["queued"] < 4:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        r = _post(c, image)  # 5 requests in progress: the sixth is refused
        assert r.status_code == 503 and "busy" in r.json()["detail"]
        gate.open()
        for thread, _ in [(first, r1), *waiting]:
            thread.join(120)
        answers = [r1["r"], *(res["r"] for _, res in waiting)]
        assert [a.status_code for a in answers] == [200] * 5
        # a batch may differ from a single image in the last float bit: one 8-bit level at most
        arrays = [np.asarray(Image.open(io.BytesIO(a.content))).astype(int) for a in answers]
        assert all(np.abs(a - arrays[0]).max() <= 1 for a in arrays)
        assert gate.sizes == [1, 4]  # the four waiting requests ran as one batch
        health = c.get("/health").json()
        assert health["models"]["tiny"]["largest_batch"] == 4 and health["inflight"] == 0

    app = _app(predictor, timeout=0.3)
    gate = Gate(app.state.models["tiny"].batcher)
    with ServerThread(app) as url, httpx.Client(base_url=url, timeout=120) as c:
        r = _post(c, image)
        gate.open()
        assert r.status_code == 504 and "timeout" in r.json()["detail"]


def test_batcher_queue_bound_and_errors():
    gate = threading.Event()

    def infer(batch):
        gate.wait(30)
        if batch.shape[0] == 2:
            raise RuntimeError("boom")
        return batch[:, :1]

    import torch

    b = Batcher(infer, max_batch=2, max_wait=0.0, max_queue=2)
    try:
        running = b.submit(torch.zeros(3, 2, 2))
        deadline = time.monotonic() + 30
        while b.queued:  # the worker took it and waits in infer
            assert time.monotonic() < deadline
            time.sleep(0.01)
        f1, f2 = b.submit(torch.ones(3, 2, 2)), b.submit(torch.ones(3, 2, 2))
        with pytest.raises(QueueFull, match="full"):
            b.submit(torch.ones(3, 2, 2))
        gate.set()
        assert running.result(30).shape == (1, 2, 2)
        with pytest.raises(RuntimeError, match="boom"):
            f1.result(30)
        with pytest.raises(RuntimeError, match="boom"):
            f2.result(30)
    finally:
        gate.set()
        b.close()


def test_console_script_serves(weights, image):
    """``python -m salseg.cli.serve --port 0`` binds 127.0.0.1 and answers a rembg-style POST."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "salseg.cli.serve", "--weights", str(weights),
                             "--input-size", str(INPUT_SIZE), "--device", "cpu", "--port", "0",
                             "--cors", "https://app.example", "--max-memory", "1G",
                             "--workers", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=ROOT)
    try:
        line = proc.stdout.readline()
        assert line.startswith("salseg-serve: http://127.0.0.1:"), (line, proc.stderr.read())
        url = line.split()[1].rstrip("/")
        with httpx.Client(base_url=url, timeout=120) as c:
            deadline = time.monotonic() + 60
            while True:
                try:
                    c.get("/health")
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline
                    time.sleep(0.1)
            r = _post(c, image)
            assert r.status_code == 200 and r.content[:8] == b"\x89PNG\r\n\x1a\n"
            models = c.get("/api/models").json()
            assert models["default"] == "u2netp_tiny"
            assert models["models"][0]["weights"] == "u2netp_tiny.pth"  # not the absolute path
            assert c.get("/health").json()["memory"]["budget"] == 2**30
            allowed = c.post("/api/remove", headers={"Origin": "https://app.example"},
                             files={"file": (image.name, image.read_bytes())})
            assert allowed.status_code == 200
            assert allowed.headers["access-control-allow-origin"] == "https://app.example"
            foreign = c.post("/api/remove", headers={"Origin": "https://evil.example"},
                             files={"file": (image.name, image.read_bytes())})
            assert foreign.status_code == 403
    finally:
        proc.terminate()
        proc.wait(30)


def test_console_script_errors(tmp_path, capsys):
    from salseg.cli.serve import main

    with pytest.raises(SystemExit):
        main([])
    assert "--weights is required" in capsys.readouterr().err
    assert main(["--weights", str(tmp_path / "missing.pth"), "--port", "0"]) == 2
    assert "missing.pth" in capsys.readouterr().err
    for bad in (["--max-memory", "lots"], ["--max-memory", "0"], ["--max-per-client", "0"],
                ["--upload-timeout", "0"], ["--workers", "-1"]):
        with pytest.raises(SystemExit):
            main(["--random-weights", "--model", "u2netp", "--port", "0", *bad])
        assert bad[0].lstrip("-").replace("-", "_").split("_")[0] in capsys.readouterr().err
