"""The FastAPI application of ``salseg-serve``: ``POST /api/remove``, ``GET /api/models``,
``GET /health``, the web page at ``/`` and offline API docs at ``/docs``.

``POST /api/remove`` takes a multipart ``file`` and answers a PNG.  The form fields that rembg's
server (``rembg s``) also has mean the same here, so rembg clients work unchanged:

* ``model``: which loaded model (its id, or its architecture when one model has it; default: the
  first one given to ``--weights``);
* ``om=true``: only the mask; ``bgc=r,g,b[,a]`` (form field or query parameter, as rembg sends
  it): composite over that opaque colour; ``ppm=true``: rembg's "post-process mask", which
  binarises a smoothed mask; here it means ``threshold=0.5`` (the closest salseg option, a
  named deviation); ``a=true`` (alpha matting) is refused with 422 (not implemented; see
  ``decontaminate`` for edge colours).

salseg's own fields: ``output`` (mask | cutout | composite | preview; default cutout) and the
options of ``salseg-predict``: ``threshold``, ``largest_component``, ``fill_holes``, ``erode``,
``feather``, ``raw_sigmoid``, ``decontaminate``, ``bg_color``.  Images are never fetched from
URLs (no server-side requests).

Errors are JSON ``{"detail": "..."}``: 403 foreign ``Origin``, 404 unknown model, 408 upload
not finished within ``upload_timeout``, 413 upload or image too large, 415 not an image (the
decoder's reason), 422 bad option (or out of proportion with the image, or an ambiguous model
name), 429 too many requests from one client, 503 queue or memory budget full, 504 timeout.

Hostile requests (docs/serve.md, "Threat model"): the pixel work runs in worker processes
(:mod:`salseg.serve.workers`) that a timeout kills; admission budgets memory
(:func:`memory_estimate`: image pixels x bytes per pixel, under ``max_memory``), not only the
number of requests; an upload has a deadline and one client address a limit of requests in
progress; POSTs from another web origin are refused unless ``cors`` allows it.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import time
import urllib.parse
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, Response

from salseg.predict.compose import parse_color
from salseg.predict.postprocess import RefineOptions
from salseg.predict.predictor import Predictor
from salseg.serve.batching import Batcher, QueueFull
from salseg.serve.outputs import (
    OUTPUT_KINDS,
    RenderOptions,
    UploadError,
    decode_step,
    finish_step,
    peek_size,
    pixel_pipeline,
)
from salseg.serve.workers import WorkerPool, rss_bytes

API_PATH = "/api/remove"
SERVE_MAX_PIXELS = 50_000_000  # 50 MP: a 8256x5504 photo passes, an 81 MP "bomb" does not
# peak bytes per image pixel of one request: the decoded RGB image in the server and in a
# worker, the float alpha and its clean-up copies, the output and its PNG encoder (measured
# peak growth of a worker on a 3 MP JPEG: 29 B/px, 105 B/px with decontaminate=true; plus the
# server's copy and the transfers)
BYTES_PER_PIXEL = 40
BYTES_PER_PIXEL_DECONTAMINATE = 120


def memory_estimate(pixels: int, upload: int, options: RenderOptions) -> int:
    """Bytes one request is budgeted for (:class:`MemoryBudget`)."""
    per_pixel = BYTES_PER_PIXEL_DECONTAMINATE if options.decontaminate else BYTES_PER_PIXEL
    return upload + pixels * per_pixel


def default_max_memory() -> int:
    """Half of the machine's physical memory (the memory budget's default)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):
        return 4 * 1024**3


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


@dataclass(frozen=True)
class ServeSettings:
    """Limits and batching of one server process."""

    max_batch: int = 8  # inputs per forward pass
    max_wait: float = 0.01  # seconds the first input of a batch waits for more
    max_queue: int = 64  # requests handled at once (more: 503)
    max_upload: int = 32 * 1024 * 1024  # request body bytes (more: 413)
    max_pixels: int | None = SERVE_MAX_PIXELS  # decoded image pixels (more: 413)
    timeout: float = 60.0  # seconds from the upload's end to the response (more: 504)
    max_memory: int | None = None  # bytes of image work in flight (None: half the machine's)
    memory_wait: float | None = None  # seconds a request waits for memory (None: timeout; 503)
    workers: int | None = None  # worker processes (None: CPUs, 1..4; 0: threads, no kill)
    upload_timeout: float = 60.0  # seconds to receive a request body (more: 408)
    max_per_client: int = 8  # requests in progress from one client address (more: 429)
    cors: tuple[str, ...] = ()  # other web origins allowed to POST ("*": any)

    def __post_init__(self) -> None:
        if self.max_batch < 1 or self.max_queue < 1 or self.max_upload < 1 or \
                self.max_per_client < 1:
            raise ValueError("max_batch, max_queue, max_upload and max_per_client must be >= 1")
        if self.max_wait < 0 or self.timeout <= 0 or self.upload_timeout <= 0:
            raise ValueError("max_wait must be >= 0, timeout and upload_timeout > 0")
        if self.max_memory is not None and self.max_memory < 1:
            raise ValueError("max_memory must be >= 1 byte")
        if self.workers is not None and self.workers < 0:
            raise ValueError("workers must be >= 0")
        object.__setattr__(self, "cors", tuple(o.rstrip("/") for o in self.cors))

    @property
    def memory_budget(self) -> int:
        return self.max_memory if self.max_memory is not None else default_max_memory()

    @property
    def worker_count(self) -> int:
        return default_workers() if self.workers is None else self.workers


@dataclass
class ServedModel:
    """One loaded model: its id in the API, the predictor and its batcher."""

    id: str
    predictor: Predictor
    source: str
    batcher: Batcher | None = field(default=None, repr=False)

    def describe(self) -> dict[str, Any]:
        pre = self.predictor.preprocessor
        name = self.source.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
        return {"id": self.id, "architecture": self.predictor.name, "weights": name,
                "input_size": list(pre.size), "device": str(self.predictor.device)}


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status)


class _Refused(Exception):
    pass


@dataclass
class InFlight:
    """Requests to ``POST /api/remove`` in progress (shared by the guard and ``/health``)."""

    count: int = 0
    per_client: dict[str, int] = field(default_factory=dict)


class MemoryBudget:
    """Bytes of image work in flight: a request reserves its estimate before its pixels are
    decoded and waits (bounded) while the others' reservations leave no room."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.reserved = 0
        self.peak = 0
        self._changed: asyncio.Condition | None = None

    @contextlib.asynccontextmanager
    async def reserve(self, amount: int, wait: float, label: str):  # noqa: ANN201
        if amount > self.capacity:
            raise UploadError(413, f"{label}: needs about {amount / 2**20:.0f} MiB to process, "
                                   f"above the server's memory budget of "
                                   f"{self.capacity / 2**20:.0f} MiB")
        if self._changed is None:
            self._changed = asyncio.Condition()
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(
                    lambda: self.reserved + amount <= self.capacity), wait)
            except asyncio.TimeoutError:
                raise UploadError(503, f"server busy: its memory budget "
                                       f"({self.capacity / 2**20:.0f} MiB) stayed full for "
                                       f"{wait:g} s; retry later") from None
            self.reserved += amount
            self.peak = max(self.peak, self.reserved)
        try:
            yield
        finally:
            async with self._changed:
                self.reserved -= amount
                self._changed.notify_all()


def _strip_port(netloc: str, scheme: str) -> str:
    default = {"http": ":80", "https": ":443"}.get(scheme, "")
    return netloc[: -len(default)] if default and netloc.endswith(default) else netloc


def _same_origin(origin: str, headers: dict) -> bool:
    """Whether ``origin`` names the host the request was sent to (its ``Host`` header; the
    scheme is not compared, so a TLS-terminating proxy in front keeps working)."""
    host = headers.get(b"host", b"").decode("latin-1").lower()
    parsed = urllib.parse.urlsplit(origin.lower())
    if not host or not parsed.netloc:
        return False
    return _strip_port(parsed.netloc, parsed.scheme) in (_strip_port(host, "http"),
                                                         _strip_port(host, "https"))


class RequestGuard:
    """ASGI middleware for ``POST /api/remove``, before the body is read into memory: refuses
    a foreign web ``Origin`` (403, unless ``cors`` allows it), more than ``max_queue`` requests
    at once (503), more than ``max_per_client`` from one address (429), bodies above
    ``max_upload`` bytes (413) and bodies not received within ``upload_timeout`` s (408)."""

    def __init__(self, app: Any, settings: ServeSettings, counter: InFlight) -> None:
        self.app = app
        self.settings = settings
        self.counter = counter

    def _allowed(self, origin: str) -> bool:
        return "*" in self.settings.cors or origin.rstrip("/") in self.settings.cors

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        origin = headers.get(b"origin", b"").decode("latin-1")
        cross = bool(origin) and not _same_origin(origin, headers)
        if scope["method"] not in ("GET", "HEAD") and cross and not self._allowed(origin):
            await _error(403, f"requests from the web origin {origin!r} are refused (start "
                              f"the server with --cors {origin} to allow them)")(
                scope, receive, send)
            return
        if cross and scope["method"] == "OPTIONS":  # CORS preflight of an allowed origin
            await Response(status_code=204, headers={
                "Access-Control-Allow-Origin": origin, "Vary": "Origin",
                "Access-Control-Allow-Methods": "GET, POST",
                "Access-Control-Allow-Headers": "*", "Access-Control-Max-Age": "600"})(
                scope, receive, send)
            return
        if cross:  # an allowed origin: let its page read the answer
            inner_send = send

            async def send(message: dict) -> None:  # noqa: F811
                if message["type"] == "http.response.start":
                    message = dict(message, headers=[
                        *message.get("headers", []),
                        (b"access-control-allow-origin", origin.encode("latin-1")),
                        (b"access-control-expose-headers",
                         b"Content-Disposition, X-Salseg-Model, X-Process-Time"),
                        (b"vary", b"Origin")])
                await inner_send(message)
        if scope["path"] != API_PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        await self._remove(scope, receive, send, headers)

    async def _remove(self, scope: dict, receive: Any, send: Any, headers: dict) -> None:
        settings, counter = self.settings, self.counter
        limit = settings.max_upload
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await _error(413, f"upload of {int(length)} bytes is above the server's limit of "
                              f"{limit} bytes")(scope, receive, send)
            return
        client = (scope.get("client") or ("unknown", 0))[0]
        if counter.count >= settings.max_queue:
            await _error(503, f"server busy: {counter.count} requests in progress (limit "
                              f"{settings.max_queue}); retry later")(scope, receive, send)
            return
        if counter.per_client.get(client, 0) >= settings.max_per_client:
            await _error(429, f"too many requests in progress from {client} (limit "
                              f"{settings.max_per_client}); retry later")(scope, receive, send)
            return
        counter.count += 1
        counter.per_client[client] = counter.per_client.get(client, 0) + 1
        received = 0
        deadline = time.monotonic() + settings.upload_timeout
        body_done = False
        refusal: tuple[int, str] | None = None  # the app may turn our exception into its own
        replaced = False

        async def guarded_receive() -> dict:
            nonlocal received, refusal, body_done
            if body_done:  # after the body: only a disconnect can come; no deadline then
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                refusal = (408, f"upload not received within the server's limit of "
                                f"{settings.upload_timeout:g} s ({received} bytes came)")
                raise _Refused from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refusal = (413, f"upload is above the server's limit of {limit} bytes")
                    raise _Refused
                body_done = not message.get("more_body", False)
            return message

        async def guarded_send(message: dict) -> None:
            nonlocal replaced
            if refusal is None:
                await send(message)
            elif not replaced:
                replaced = True
                await _error(*refusal)(scope, receive, send)

        try:
            await self.app(scope, guarded_receive, guarded_send)
        except _Refused:
            if not replaced:
                await guarded_send({})
        finally:
            counter.count -= 1
            counter.per_client[client] -= 1
            if not counter.per_client[client]:
                del counter.per_client[client]


def _page(name: str) -> str:
    return resources.files("salseg.serve").joinpath("static", name).read_text(encoding="utf-8")


def _parse_bgc(text: str) -> str:
    """rembg's ``bgc`` (``r,g,b,a``) -> a colour for ``background_like``; opaque only."""
    try:
        parts = [int(p) for p in text.split(",")]
    except ValueError:
        raise ValueError(f"bgc {text!r}: expected r,g,b or r,g,b,a integers in 0..255") from None
    if len(parts) not in (3, 4) or any(not 0 <= p <= 255 for p in parts):
        raise ValueError(f"bgc {text!r}: expected r,g,b or r,g,b,a integers in 0..255")
    if len(parts) == 4 and parts[3] != 255:
        raise ValueError(f"bgc {text!r}: only opaque backgrounds (alpha 255) are supported")
    return ",".join(str(p) for p in parts[:3])


def request_options(output: str | None, om: bool, ppm: bool, bgc: str | None, a: bool,
                    threshold: float | None, largest_component: bool, fill_holes: bool,
                    erode: int, feather: float, raw_sigmoid: bool, decontaminate: bool,
                    bg_color: str | None) -> RenderOptions:
    """The :class:`RenderOptions` of a request's form fields (ValueError names the bad one)."""
    if a:
        raise ValueError("a=true (alpha matting) is not implemented; decontaminate=true "
                         "estimates edge colours instead")
    if bgc and bg_color:
        raise ValueError("give either bgc (rembg) or bg_color, not both")
    kind = output
    if om:
        if kind not in (None, "mask"):
            raise ValueError(f"om=true asks for the mask, but output={kind!r}")
        kind = "mask"
    colour = bg_color or "white"
    if bgc:
        colour = _parse_bgc(bgc)
        kind = kind or "composite"
    kind = kind or "cutout"
    parse_color(colour)
    if ppm and threshold is None:
        threshold = 0.5
    refine = RefineOptions(threshold=threshold, largest_component=largest_component,
                           fill_holes=fill_holes, erode=erode, feather=feather)
    return RenderOptions(kind=kind, normalization="sigmoid" if raw_sigmoid else None,
                         refine=refine, decontaminate=decontaminate, bg_color=colour)


def create_app(models: list[ServedModel], settings: ServeSettings = ServeSettings()) -> FastAPI:
    """The application serving ``models`` (the first one is the default)."""
    if not models:
        raise ValueError("at least one model is needed")
    ids = [m.id for m in models]
    if len(set(ids)) != len(ids):
        raise ValueError(f"model ids must be unique, got {ids}")
    for m in models:
        if m.batcher is None:
            m.batcher = Batcher(m.predictor.infer, settings.max_batch, settings.max_wait,
                                settings.max_queue, name=m.id)
    by_id = {m.id: m for m in models}
    by_arch: dict[str, list[ServedModel]] = {}
    for m in models:
        by_arch.setdefault(m.predictor.name, []).append(m)

    pool = WorkerPool(settings.worker_count)
    budget = MemoryBudget(settings.memory_budget)
    pipelines = {m.id: pixel_pipeline(m.predictor) for m in models}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202
        warm = asyncio.ensure_future(asyncio.to_thread(pool.prestart))
        yield
        with contextlib.suppress(Exception):
            await asyncio.wait_for(warm, 60)
        pool.close()
        for m in models:
            if m.batcher is not None:
                await run_in_threadpool(m.batcher.close)

    app = FastAPI(title="salseg-serve", version="1", lifespan=lifespan, docs_url=None,
                  redoc_url=None, swagger_ui_oauth2_redirect_url=None,
                  description="Salient-object masks, cut-outs and composites (U2-Net, U2-NetP, "
                              "IS-Net). `POST /api/remove` is compatible with rembg's server.")
    counter = InFlight()
    app.state.models = by_id
    app.state.settings = settings
    app.state.inflight = counter
    app.state.pool = pool
    app.state.budget = budget

    def lookup(name: str | None) -> ServedModel:
        if not name:
            return models[0]
        if name in by_id:
            return by_id[name]
        if len(by_arch.get(name, [])) == 1:
            return by_arch[name][0]
        if len(by_arch.get(name, [])) > 1:
            raise UploadError(422, f"model {name!r} is ambiguous: it is the architecture of "
                                   f"{', '.join(m.id for m in by_arch[name])}; ask for one of "
                                   f"these ids")
        raise UploadError(404, f"unknown model {name!r}; loaded: {', '.join(ids)}")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> str:
        return _page("index.html")

    @app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    def docs() -> str:
        return _page("docs.html")

    @app.get("/health", summary="Liveness and queue state")
    def health() -> dict:
        return {"status": "ok", "inflight": counter.count,
                "memory": {"budget": budget.capacity, "reserved": budget.reserved,
                           "peak_reserved": budget.peak,
                           "workers_rss": rss_bytes(pool.pids)},
                "workers": {"size": pool.size, "running": len(pool.pids),
                            "killed": pool.killed},
                "models": {m.id: {"queued": m.batcher.queued, "batches": m.batcher.batches,
                                  "images": m.batcher.images,
                                  "largest_batch": m.batcher.largest_batch}
                           for m in models if m.batcher is not None}}

    @app.get("/api/models", summary="The loaded models and the output kinds")
    def list_models() -> dict:
        return {"default": models[0].id, "models": [m.describe() for m in models],
                "outputs": list(OUTPUT_KINDS)}

    @app.post(API_PATH, summary="Remove the background of an uploaded image",
              response_class=Response,
              responses={200: {"content": {"image/png": {}}, "description": "a PNG image"},
                         403: {"description": "foreign web origin (see --cors)"},
                         404: {"description": "unknown model"},
                         408: {"description": "upload too slow"},
                         413: {"description": "upload or image too large"},
                         415: {"description": "not a readable image"},
                         422: {"description": "bad option, or ambiguous model"},
                         429: {"description": "too many requests from this client"},
                         503: {"description": "queue or memory budget full"},
                         504: {"description": "request timeout"}})
    async def remove(
        request: Request,
        file: UploadFile = File(..., description="the image (any format Pillow reads)"),
        model: str | None = Form(None, description="model id (GET /api/models); default: the "
                                                   "first loaded"),
        output: str | None = Form(None, description="mask | cutout | composite | preview "
                                                    "(default cutout)"),
        om: bool = Form(False, description="rembg: only the mask"),
        ppm: bool = Form(False, description="rembg: post-process the mask (threshold 0.5)"),
        bgc: str | None = Form(None, description="rembg: composite over r,g,b[,a]"),
        bgc_query: str | None = Query(None, alias="bgc", description="rembg sends bgc here"),
        a: bool = Form(False, description="rembg alpha matting: not implemented (422)"),
        threshold: float | None = Form(None, description="binarise the mask at T in [0, 1]"),
        largest_component: bool = Form(False, description="keep the largest object"),
        fill_holes: bool = Form(False, description="fill holes inside the object"),
        erode: int = Form(0, description="shrink the mask by N pixels (at most the image's "
                                         "longer side)"),
        feather: float = Form(0.0, description="Gaussian blur of the mask edge (sigma, px; at "
                                               "most the image's longer side)"),
        raw_sigmoid: bool = Form(False, description="sigmoid probabilities, no min-max"),
        decontaminate: bool = Form(False, description="estimate foreground edge colours"),
        bg_color: str | None = Form(None, description="composite background (name, #rrggbb, "
                                                      "r,g,b; default white)"),
    ) -> Response:
        start = time.monotonic()
        try:
            served = lookup(model)
            try:
                options = request_options(output, om, ppm, bgc or bgc_query, a, threshold,
                                          largest_component, fill_holes, erode, feather,
                                          raw_sigmoid, decontaminate, bg_color)
            except ValueError as exc:
                raise UploadError(422, str(exc)) from None
            data = await file.read()
            filename = file.filename or "upload"
            size = peek_size(data)
            if size and settings.max_pixels and size[0] * size[1] > settings.max_pixels:
                h, w = size
                raise UploadError(413, f"{filename}: image is {w}x{h} = {h * w / 1e6:.1f} MP, "
                                       f"above the server's limit of "
                                       f"{settings.max_pixels / 1e6:.1f} MP")
            need = memory_estimate(size[0] * size[1] if size else 0, len(data), options)
            wait = settings.timeout if settings.memory_wait is None else settings.memory_wait
            async with budget.reserve(need, wait, filename):
                try:
                    client = request.client.host if request.client else None
                    png = await asyncio.wait_for(
                        _process(served, data, filename, options, client), settings.timeout)
                except asyncio.TimeoutError:
                    raise UploadError(504, f"{filename}: no result within the server's timeout "
                                           f"of {settings.timeout:g} s") from None
        except UploadError as exc:
            return _error(exc.status, exc.message)
        stem = filename.replace("\\", "/").rsplit("/", 1)[-1].rsplit(".", 1)[0] or "image"
        return Response(png, media_type="image/png", headers={
            "Content-Disposition": content_disposition(f"{stem}_{options.kind}.png"),
            "X-Salseg-Model": served.id,
            "X-Process-Time": f"{time.monotonic() - start:.4f}"})

    async def _process(served: ServedModel, data: bytes, filename: str,
                       options: RenderOptions, client: str | None) -> bytes:
        pipeline = pipelines[served.id]
        image, x = await pool.run(decode_step, pipeline, data, filename, settings.max_pixels,
                                  options, client=client)
        assert served.batcher is not None
        try:
            future = served.batcher.submit(x)
        except QueueFull as exc:
            raise UploadError(503, str(exc)) from None
        try:
            prob = await asyncio.wrap_future(future)
        except Exception as exc:  # noqa: BLE001 - e.g. out of memory on the device
            raise UploadError(500, f"inference failed ({type(exc).__name__}: {exc})") from None
        return await pool.run(finish_step, pipeline, prob, image, options, client=client)

    app.add_middleware(RequestGuard, settings=settings, counter=counter)
    return app


def _safe(text: str) -> str:
    return "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_"
                   for c in text)[:100]


def content_disposition(name: str) -> str:
    """``inline`` with an ASCII ``filename`` fallback and the exact name as RFC 5987
    ``filename*`` (UTF-8, percent-encoded), so any upload name is a valid header."""
    ascii_name = _safe(name)
    if ascii_name == name:
        return f'inline; filename="{name}"'
    return (f'inline; filename="{ascii_name}"; '
            f"filename*=UTF-8''{urllib.parse.quote(name[:200], safe='')}")


__all__ = ["ServeSettings", "ServedModel", "create_app", "request_options"]
