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

Errors are JSON ``{"detail": "..."}``: 404 unknown model, 413 upload or image too large, 415
not an image (the decoder's reason), 422 bad option, 503 queue full, 504 request timeout.
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from fastapi import FastAPI, File, Form, Query, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, Response

from salseg.predict.batch import DEFAULT_MAX_PIXELS
from salseg.predict.compose import parse_color
from salseg.predict.postprocess import RefineOptions
from salseg.predict.predictor import Predictor
from salseg.serve.batching import Batcher, QueueFull
from salseg.serve.outputs import (
    OUTPUT_KINDS,
    RenderOptions,
    UploadError,
    decode_upload,
    finish,
    prepare,
    render,
)

API_PATH = "/api/remove"


@dataclass(frozen=True)
class ServeSettings:
    """Limits and batching of one server process."""

    max_batch: int = 8  # inputs per forward pass
    max_wait: float = 0.01  # seconds the first input of a batch waits for more
    max_queue: int = 64  # requests handled at once (more: 503)
    max_upload: int = 32 * 1024 * 1024  # request body bytes (more: 413)
    max_pixels: int | None = DEFAULT_MAX_PIXELS  # decoded image pixels (more: 413)
    timeout: float = 60.0  # seconds from the upload's end to the response (more: 504)

    def __post_init__(self) -> None:
        if self.max_batch < 1 or self.max_queue < 1 or self.max_upload < 1:
            raise ValueError("max_batch, max_queue and max_upload must be >= 1")
        if self.max_wait < 0 or self.timeout <= 0:
            raise ValueError("max_wait must be >= 0 and timeout > 0")


@dataclass
class ServedModel:
    """One loaded model: its id in the API, the predictor and its batcher."""

    id: str
    predictor: Predictor
    source: str
    batcher: Batcher | None = field(default=None, repr=False)

    def describe(self) -> dict[str, Any]:
        pre = self.predictor.preprocessor
        return {"id": self.id, "architecture": self.predictor.name, "weights": self.source,
                "input_size": list(pre.size), "device": str(self.predictor.device)}


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status)


class _TooLarge(Exception):
    pass


@dataclass
class InFlight:
    """Requests to ``POST /api/remove`` in progress (shared by the guard and ``/health``)."""

    count: int = 0


class RequestGuard:
    """ASGI middleware for ``POST /api/remove``: refuses more than ``max_queue`` requests at once
    (503) and bodies above ``max_upload`` bytes (413), before the body is read into memory."""

    def __init__(self, app: Any, settings: ServeSettings, counter: InFlight) -> None:
        self.app = app
        self.settings = settings
        self.counter = counter

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != API_PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        limit = self.settings.max_upload
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await _error(413, f"upload of {int(length)} bytes is above the server's limit of "
                              f"{limit} bytes")(scope, receive, send)
            return
        if self.counter.count >= self.settings.max_queue:
            await _error(503, f"server busy: {self.counter.count} requests in progress (limit "
                              f"{self.settings.max_queue}); retry later")(scope, receive, send)
            return
        self.counter.count += 1
        received = 0
        too_large = False  # the app may turn our exception into its own error: answer 413
        replaced = False

        async def counting_receive() -> dict:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    too_large = True
                    raise _TooLarge
            return message

        async def guarded_send(message: dict) -> None:
            nonlocal replaced
            if not too_large:
                await send(message)
            elif not replaced:
                replaced = True
                await _error(413, f"upload is above the server's limit of {limit} bytes")(
                    scope, receive, send)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except _TooLarge:
            if not replaced:
                await guarded_send({})
        finally:
            self.counter.count -= 1


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
    return RenderOptions(kind=kind, normalization="sigmoid" if raw_sigmoid else "minmax",
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

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202
        yield
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

    def lookup(name: str | None) -> ServedModel:
        if not name:
            return models[0]
        if name in by_id:
            return by_id[name]
        if len(by_arch.get(name, [])) == 1:
            return by_arch[name][0]
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
                         404: {"description": "unknown model"},
                         413: {"description": "upload or image too large"},
                         415: {"description": "not a readable image"},
                         422: {"description": "bad option"},
                         503: {"description": "queue full"},
                         504: {"description": "request timeout"}})
    async def remove(
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
        erode: int = Form(0, description="shrink the mask by N pixels"),
        feather: float = Form(0.0, description="Gaussian blur of the mask edge (sigma, px)"),
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
            try:
                png = await asyncio.wait_for(_process(served, data, filename, options),
                                             settings.timeout)
            except asyncio.TimeoutError:
                raise UploadError(504, f"{filename}: no result within the server's timeout of "
                                       f"{settings.timeout:g} s") from None
        except UploadError as exc:
            return _error(exc.status, exc.message)
        stem = filename.rsplit("/", 1)[-1].rsplit(".", 1)[0] or "image"
        return Response(png, media_type="image/png", headers={
            "Content-Disposition": f'inline; filename="{_safe(stem)}_{options.kind}.png"',
            "X-Salseg-Model": served.id,
            "X-Process-Time": f"{time.monotonic() - start:.4f}"})

    async def _process(served: ServedModel, data: bytes, filename: str,
                       options: RenderOptions) -> bytes:
        image, gray = await run_in_threadpool(decode_upload, data, filename, settings.max_pixels)
        x = await run_in_threadpool(prepare, served.predictor, image, gray)
        assert served.batcher is not None
        try:
            future = served.batcher.submit(x)
        except QueueFull as exc:
            raise UploadError(503, str(exc)) from None
        try:
            prob = await asyncio.wrap_future(future)
        except Exception as exc:  # noqa: BLE001 - e.g. out of memory on the device
            raise UploadError(500, f"inference failed ({type(exc).__name__}: {exc})") from None

        def post() -> bytes:
            return render(image, finish(served.predictor, prob, image.shape[:2], options),
                          options)

        return await run_in_threadpool(post)

    app.add_middleware(RequestGuard, settings=settings, counter=counter)
    return app


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:100]


__all__ = ["ServeSettings", "ServedModel", "create_app", "request_options"]
