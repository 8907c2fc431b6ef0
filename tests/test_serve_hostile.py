"""salseg-serve against hostile or careless requests (issue 19, items 4-8; issue 20, item 10),
through a real server on 127.0.0.1: option bounds, work a timeout kills while ``/health``
answers, the memory budget, decompression bombs, slow uploads, per-client limits, foreign
origins, non-Latin-1 upload names and ambiguous model names.  No timing is asserted beyond
generous bounds (a job that runs for minutes without the fix)."""
from __future__ import annotations

import io
import os
import socket
import struct
import sys
import threading
import time
import traceback
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from serve_helpers import INPUT_SIZE, ServerThread, make_image, tiny_weights

from salseg.predict.predictor import Predictor
from salseg.serve.app import ServedModel, ServeSettings, create_app


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return tiny_weights(tmp_path_factory.mktemp("w"))


@pytest.fixture(scope="module")
def predictor(weights):
    return Predictor(weights, input_size=INPUT_SIZE, device="cpu")


@pytest.fixture(scope="module")
def square(tmp_path_factory):
    return make_image(tmp_path_factory.mktemp("img") / "square.png", size=(64, 64))


def _app(predictor, weights=None, **settings):
    source = str(weights) if weights else "u2netp_tiny.pth"
    return create_app([ServedModel("tiny", predictor, source)],
                      ServeSettings(**{"workers": 1, **settings}))


def _post(client, path: Path, name: str | None = None, headers=None, **data):
    return client.post("/api/remove", files={"file": (name or path.name, path.read_bytes())},
                       data={k: str(v) for k, v in data.items()}, headers=headers)


def test_options_out_of_proportion_are_refused_with_422(predictor, square):
    """``erode=200`` on a 64x64 image froze the server for 17 s; ``feather=inf`` gave a plain
    text 500, ``feather=1e9`` a 60 GiB allocation.  Now: 422, JSON, naming the field."""
    with ServerThread(_app(predictor)) as url, httpx.Client(base_url=url, timeout=120) as c:
        for field, value in (("erode", 200), ("erode", 10**9), ("feather", "inf"),
                             ("feather", "1e9"), ("feather", "nan"), ("threshold", "nan")):
            r = _post(c, square, **{field: value})
            assert r.status_code == 422, (field, value, r.status_code, r.text[:200])
            assert r.headers["content-type"] == "application/json"
            assert field in r.json()["detail"], r.json()
        r = _post(c, square, erode=200)
        assert "longer side (64 px" in r.json()["detail"]
        r = _post(c, square, erode=64, feather=64, output="mask")  # the bound itself is fine
        assert r.status_code == 200
        assert not np.asarray(Image.open(io.BytesIO(r.content))).any()  # eroded away


def test_timeout_kills_the_work_and_health_answers_meanwhile(predictor, tmp_path, square):
    """A valid but costly request (feather 2000 on a 2000x2000 image: minutes of Gaussian
    filtering) runs in a worker process: ``/health`` and other requests are answered during it,
    ``--timeout`` answers 504 and kills the worker, so the abandoned work stops."""
    big = tmp_path / "big.png"
    Image.new("RGB", (2000, 2000), (40, 90, 160)).save(big)
    app = _app(predictor, workers=2, timeout=8)
    with ServerThread(app) as url, httpx.Client(base_url=url, timeout=120) as c:
        result = {}
        heavy = threading.Thread(target=lambda: result.setdefault(
            "r", _post(httpx.Client(base_url=url, timeout=300), big, feather=2000)))
        heavy.start()
        deadline = time.monotonic() + 60
        while c.get("/health").json()["inflight"] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(1.0)  # the worker is filtering now
        health = httpx.get(url + "/health", timeout=5)  # generous: the job takes minutes
        assert health.status_code == 200
        pids = health.json()["workers"]["running"]
        assert pids >= 1
        assert _post(c, square).status_code == 200  # a well-behaved client is served
        heavy.join(300)
        r = result["r"]
        assert r.status_code == 504 and "timeout of 8 s" in r.json()["detail"]
        # the abandoned work stopped: no thread of this process (the server's) still filters,
        # where the old server went on in a thread for minutes after the 504
        time.sleep(0.5)
        stacks = [[f.name for f in traceback.extract_stack(frame)]
                  for frame in sys._current_frames().values()]
        assert not [names for names in stacks if "feather" in names or "refine" in names]
        after = c.get("/health").json()
        assert after["workers"]["killed"] == 1 and after["memory"]["reserved"] == 0
        assert _post(c, square).status_code == 200  # a fresh worker replaces it


def test_killed_worker_process_is_gone(predictor, tmp_path):
    big = tmp_path / "big.png"
    Image.new("RGB", (1500, 1500), (40, 90, 160)).save(big)
    app = _app(predictor, timeout=3)
    pool = app.state.pool
    with ServerThread(app) as url, httpx.Client(base_url=url, timeout=300) as c:
        seen: set[int] = set()
        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                seen.update(pool.pids)
                time.sleep(0.05)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        r = _post(c, big, feather=1500)
        stop.set()
        watcher.join(10)
        assert r.status_code == 504
        assert seen and not (seen & set(pool.pids))
        for pid in seen:  # killed and reaped: the work does not continue after the 504
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)


def _png_bomb(path: Path, side: int = 9000) -> Path:
    """A valid grayscale PNG of side x side zero pixels: ~80 KB on disk, 81 MP decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = zlib.compress(b"\0" * ((side + 1) * side), 9)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8,
                                                                       0, 0, 0, 0))
                     + chunk(b"IDAT", raw) + chunk(b"IEND", b""))
    return path


def test_decompression_bomb_and_memory_budget(predictor, tmp_path, square):
    bomb = _png_bomb(tmp_path / "bomb.png")
    assert bomb.stat().st_size < 200_000
    with ServerThread(_app(predictor)) as url, httpx.Client(base_url=url, timeout=120) as c:
        r = _post(c, bomb)  # 81 MP: under the old default of 89 MP, now above 50 MP
        assert r.status_code == 413 and "9000x9000" in r.json()["detail"], r.text[:300]
    # a budget for one 64x64 request: a second one waits, then 503; one above it all: 413
    from salseg.serve.app import memory_estimate
    from salseg.serve.outputs import RenderOptions

    one = memory_estimate(64 * 64, square.stat().st_size + 1000, RenderOptions())
    app = _app(predictor, max_memory=int(one * 1.5), memory_wait=0.5, timeout=600)
    gate = threading.Event()
    entered = threading.Event()
    batcher = app.state.models["tiny"].batcher
    infer = batcher.infer

    def held(batch):
        entered.set()
        gate.wait(120)
        return infer(batch)

    batcher.infer = held
    with ServerThread(app) as url, httpx.Client(base_url=url, timeout=120) as c:
        result = {}
        first = threading.Thread(target=lambda: result.setdefault(
            "r", _post(httpx.Client(base_url=url, timeout=300), square)))
        first.start()
        try:
            assert entered.wait(120)
            assert c.get("/health").json()["memory"]["reserved"] > 0
            r = _post(c, square)
            assert r.status_code == 503 and "memory budget" in r.json()["detail"], r.text
            big = tmp_path / "big.png"
            make_image(big, size=(200, 200))
            r = _post(c, big)
            assert r.status_code == 413 and "memory budget" in r.json()["detail"], r.text
        finally:
            gate.set()
        first.join(300)
        assert result["r"].status_code == 200
        health = c.get("/health").json()["memory"]
        assert health["reserved"] == 0 and 0 < health["peak_reserved"] <= health["budget"]


def _trickle(port: int, source: str = "127.0.0.1", length: int = 5000) -> socket.socket:
    """A client that sends the headers and the first bytes of a multipart body, then nothing."""
    s = socket.create_connection(("127.0.0.1", port), timeout=120,
                                 source_address=(source, 0))
    s.sendall(b"POST /api/remove HTTP/1.1\r\nHost: 127.0.0.1\r\n"
              b"Content-Type: multipart/form-data; boundary=b\r\n"
              + f"Content-Length: {length}\r\n\r\n".encode()
              + b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.png\"\r\n\r\n")
    return s


def _read_response(s: socket.socket) -> bytes:
    reply = b""
    while b"\r\n\r\n" not in reply:
        chunk = s.recv(4096)
        if not chunk:
            return reply
        reply += chunk
    head, body = reply.split(b"\r\n\r\n", 1)
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")))
    while len(body) < length:
        chunk = s.recv(4096)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def test_slow_upload_deadline(predictor):
    with ServerThread(_app(predictor, upload_timeout=1.0)) as url:
        port = int(url.rsplit(":", 1)[1])
        s = _trickle(port)
        try:
            reply = _read_response(s)  # generous socket timeout (120 s); the deadline is 1 s
        finally:
            s.close()
        assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
        assert b"upload not received within the server's limit of 1 s" in reply


def test_per_client_limit_keeps_others_served(predictor, square):
    """Slow uploads from one address hold at most ``max_per_client`` slots: its next request
    gets 429 and another client (127.0.0.2) is served."""
    with ServerThread(_app(predictor, max_per_client=2, upload_timeout=600)) as url, \
            httpx.Client(base_url=url, timeout=120) as c:
        port = int(url.rsplit(":", 1)[1])
        slow = [_trickle(port) for _ in range(2)]
        try:
            deadline = time.monotonic() + 60
            while c.get("/health").json()["inflight"] < 2:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            r = _post(c, square)
            assert r.status_code == 429 and "127.0.0.1" in r.json()["detail"]
            other = httpx.Client(base_url=url, timeout=120,
                                 transport=httpx.HTTPTransport(local_address="127.0.0.2"))
            with other:
                assert _post(other, square).status_code == 200
        finally:
            for s in slow:
                s.close()


def test_foreign_origin_refused_unless_allowed(predictor, weights, square):
    with ServerThread(_app(predictor, weights)) as url, \
            httpx.Client(base_url=url, timeout=120) as c:
        r = _post(c, square, headers={"Origin": "http://evil.example"})
        assert r.status_code == 403 and "--cors http://evil.example" in r.json()["detail"]
        r = _post(c, square, headers={"Origin": "null"})
        assert r.status_code == 403
        assert _post(c, square, headers={"Origin": url}).status_code == 200  # its own page
        assert _post(c, square).status_code == 200  # no Origin: curl, rembg's client
        models = c.get("/api/models", headers={"Origin": "http://evil.example"}).json()
        assert models["models"][0]["weights"] == "u2netp_tiny.pth"  # the name, not the path
        assert str(weights.parent) not in c.get("/api/models").text
    app = _app(predictor, cors=("https://app.example",))
    with ServerThread(app) as url, httpx.Client(base_url=url, timeout=120) as c:
        r = _post(c, square, headers={"Origin": "https://app.example"})
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "https://app.example"
        pre = c.options("/api/remove", headers={"Origin": "https://app.example",
                                                "Access-Control-Request-Method": "POST"})
        assert pre.status_code == 204
        assert pre.headers["access-control-allow-origin"] == "https://app.example"
        assert _post(c, square, headers={"Origin": "https://other.example"}).status_code == 403


def test_non_latin1_upload_name(predictor, square):
    with ServerThread(_app(predictor)) as url, httpx.Client(base_url=url, timeout=120) as c:
        r = _post(c, square, name="日本.png")
        assert r.status_code == 200, r.text[:200]
        disposition = r.headers["content-disposition"]
        assert disposition.isascii()
        assert "filename*=UTF-8''%E6%97%A5%E6%9C%AC_cutout.png" in disposition
        assert 'filename="___cutout.png"' in disposition  # ASCII fallback
        r = _post(c, square, name="photo.png", output="mask")
        assert r.headers["content-disposition"] == 'inline; filename="photo_mask.png"'


def test_ambiguous_model_name(predictor, square):
    app = create_app([ServedModel("a", predictor, "a.pth"), ServedModel("b", predictor, "b.pth")],
                     ServeSettings(workers=1))
    with ServerThread(app) as url, httpx.Client(base_url=url, timeout=120) as c:
        r = _post(c, square, model="u2netp")
        assert r.status_code == 422
        assert r.json()["detail"] == ("model 'u2netp' is ambiguous: it is the architecture of "
                                      "a, b; ask for one of these ids")
        assert _post(c, square, model="b").status_code == 200
