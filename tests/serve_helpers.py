"""Helpers of the serve tests: tiny U2-NetP weights, test images and a real server on
127.0.0.1 (random port) run by uvicorn in a thread of the test process."""
from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

INPUT_SIZE = 64  # tiny model input: fast on 2 cores


def tiny_weights(folder: Path, seed: int = 0) -> Path:
    """A U2-NetP state dict with seeded random weights, saved as an official-style .pth."""
    from salseg.models.registry import create_model

    path = folder / "u2netp_tiny.pth"
    if not path.exists():
        torch.manual_seed(seed)
        torch.save(create_model("u2netp").state_dict(), path)
    return path


def test_image(path: Path, size: tuple[int, int] = (120, 80), seed: int = 0) -> Path:
    """A JPEG with a bright disc on a textured background (width, height = ``size``)."""
    w, h = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = (rng.random((h, w, 3)) * 60 + 40).astype(np.float32)
    disc = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (min(h, w) / 3) ** 2
    img[disc] = (230, 60, 40)
    Image.fromarray(img.astype(np.uint8)).save(path, quality=92)
    return path


class ServerThread:
    """``with ServerThread(app) as url:`` serves ``app`` on 127.0.0.1:<free port>."""

    def __init__(self, app) -> None:  # noqa: ANN001
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self.url

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()
