"""Helpers of the serve tests: tiny U2-NetP weights, test images and a real server on
127.0.0.1 (random port) run by uvicorn in a thread of the test process."""
from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

INPUT_SIZE = 64  # tiny model input: fast on 2 cores


def tiny_weights(folder: Path, seed: int = 3) -> Path:
    """U2-NetP with seeded random weights (the prediction tests' model), saved as a .pth."""
    from fixtures.predict.helpers import random_model

    from salseg.models.weights import save_state_dict

    path = folder / "u2netp_tiny.pth"
    if not path.exists():
        save_state_dict(random_model("u2netp", seed=seed), path)
    return path


def make_image(path: Path, size: tuple[int, int] = (96, 72), seed: int = 0, **kw) -> Path:
    """The prediction tests' object image (width, height = ``size``) saved to ``path``."""
    from fixtures.predict.helpers import object_image, save

    return save(object_image(size[1], size[0], seed=seed), path, **kw)


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
