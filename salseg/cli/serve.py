"""``salseg-serve``: HTTP API (rembg-compatible ``POST /api/remove``) and web page for one or
several models.

Example::

    salseg-serve --weights u2netp.pth --weights portrait=run.ckpt --port 7000
    curl -F file=@photo.jpg http://127.0.0.1:7000/api/remove -o cutout.png

``--weights`` takes what ``salseg-predict --weights`` takes, optionally as ``ID=WEIGHTS`` to name
the model in the API (default id: the file's stem, or the name itself).  Binds 127.0.0.1 unless
``--host`` says otherwise; ``--port 0`` picks a free port (printed at start).  See docs/serve.md.
"""
from __future__ import annotations

import argparse
import logging
import socket
from pathlib import Path

from salseg.cli.errors import report
from salseg.cli.predict import _size

log = logging.getLogger("salseg.serve")
PROG = "salseg-serve"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", action="append", default=[], metavar="[ID=]WEIGHTS",
                   help="a model to serve (repeat for several; the first is the default)")
    p.add_argument("--model", help="architecture when it cannot be guessed from the weights (a "
                   "model card name: salseg-models cards)")
    p.add_argument("--random-weights", action="store_true",
                   help="serve --model with random weights (for testing only)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=7000, help="port (0: any free port)")
    g = p.add_argument_group("inference (as salseg-predict)")
    g.add_argument("--device", default="auto", help="auto (CUDA if available), cpu or cuda[:N]")
    g.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")
    g.add_argument("--input-size", type=_size, default=None, metavar="N|HxW",
                   help="model input size (default: the model's)")
    g.add_argument("--resize", choices=("official", "antialias"), default="official")
    g = p.add_argument_group("load")
    g.add_argument("--max-batch", type=int, default=8, help="images per forward pass (1: off)")
    g.add_argument("--max-wait-ms", type=float, default=10.0,
                   help="how long the first image of a batch waits for more (ms)")
    g.add_argument("--max-queue", type=int, default=64,
                   help="requests handled at once; more are answered 503")
    g.add_argument("--max-upload-mb", type=float, default=32.0,
                   help="request size limit in MB (413 above)")
    g.add_argument("--max-pixels", type=int, default=None, metavar="N",
                   help="refuse images with more pixels (413; default 50000000, 0: no limit)")
    g.add_argument("--max-memory", type=_memory, default=None, metavar="SIZE",
                   help="memory budget of the image work in flight, e.g. 4G or 512M (default: "
                        "half the machine's memory); requests that do not fit wait, then 503")
    g.add_argument("--workers", type=int, default=None, metavar="N",
                   help="worker processes for decoding and post-processing, killed when a "
                        "request times out (default: CPUs, 1 to 4; 0: threads, no kill)")
    g.add_argument("--timeout", type=float, default=60.0, help="request timeout in s (504)")
    g.add_argument("--upload-timeout", type=float, default=60.0,
                   help="seconds to receive a request body (408 after)")
    g.add_argument("--max-per-client", type=int, default=8, metavar="N",
                   help="requests in progress from one client address (429 above)")
    p.add_argument("--cors", action="extend", nargs="+", default=[], metavar="ORIGIN",
                   help="other web origins allowed to POST (e.g. https://app.example; '*': any); "
                        "default: none, POSTs carrying a foreign Origin get 403")
    p.add_argument("--log-level", default="warning",
                   choices=("critical", "error", "warning", "info", "debug"))
    return p


def _memory(text: str) -> int:
    """``4G``, ``512M``, ``100K`` or a number of MiB -> bytes."""
    units = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    try:
        value = float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t) * 2**20
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a size like 4G or 512M") from None
    if not value >= 1:
        raise argparse.ArgumentTypeError(f"{text!r}: the memory budget must be positive")
    return int(value)


def _split(spec: str) -> tuple[str, str]:
    """``ID=WEIGHTS`` or ``WEIGHTS`` -> (id, weights)."""
    if "=" in spec and not Path(spec).exists():
        ident, weights = spec.split("=", 1)
        if ident and weights:
            return ident, weights
    path = Path(spec)
    return (path.stem if path.suffix else spec), spec


def load_models(args: argparse.Namespace) -> list:
    """One :class:`~salseg.serve.app.ServedModel` per ``--weights`` (Predictor as salseg-predict)."""
    from salseg.predict.predictor import Predictor
    from salseg.serve.app import ServedModel

    kw = dict(model=args.model, device=args.device, precision=args.precision,
              input_size=args.input_size, resize=args.resize)
    if args.random_weights:
        return [ServedModel(f"{args.model}-random", Predictor(None, **kw), "random")]
    served = []
    for spec in args.weights:
        ident, weights = _split(spec)
        served.append(ServedModel(ident, Predictor(weights, **kw), weights))
    return served


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(message)s")
    if not args.weights and not args.random_weights:
        parser.error("--weights is required (or --random-weights --model NAME for a smoke test)")
    if args.random_weights and (args.weights or not args.model):
        parser.error("--random-weights needs --model and no --weights")
    ids = [_split(s)[0] for s in args.weights]
    if len(set(ids)) != len(ids):
        parser.error(f"model ids must be unique, got {ids}; name them with ID=WEIGHTS")

    try:
        import uvicorn

        from salseg.serve.app import SERVE_MAX_PIXELS, ServeSettings, create_app
    except ImportError as exc:
        return report(PROG, f"{exc.name} is missing: pip install 'salseg[serve]'", exc=exc)

    try:
        settings = ServeSettings(
            max_batch=args.max_batch, max_wait=args.max_wait_ms / 1000, max_queue=args.max_queue,
            max_upload=int(args.max_upload_mb * 1024 * 1024), timeout=args.timeout,
            max_pixels=SERVE_MAX_PIXELS if args.max_pixels is None else args.max_pixels or None,
            max_memory=args.max_memory, workers=args.workers,
            upload_timeout=args.upload_timeout, max_per_client=args.max_per_client,
            cors=tuple(args.cors))
    except ValueError as exc:
        parser.error(str(exc))
    try:
        models = load_models(args)
    except (ValueError, RuntimeError, OSError) as exc:  # WeightsError is a RuntimeError
        return report(PROG, exc)
    app = create_app(models, settings)
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as exc:
        return report(PROG, f"cannot bind {args.host}:{args.port} ({exc.strerror or exc})",
                      exc=exc)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"salseg-serve: http://{shown}:{port}/ serving {', '.join(m.id for m in models)} "
          f"(API docs at /docs)", flush=True)
    config = uvicorn.Config(app, log_level=args.log_level, timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
