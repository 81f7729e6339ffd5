"""The fovea inference server: FastAPI app with models, line control, live view and dashboard.

`create_app(models, config)` builds the app; `fovea serve` runs it under uvicorn. Endpoints:

  POST /api/predict/{name}   one or more images (multipart field `file`, repeatable, or a raw
                             image body) -> {"model", "task", "predictions": [predictions.jsonl
                             records]}; `?overlay=1` adds each image's overlay as base64 PNG
  GET  /api/models           the loaded models;  POST /api/models/{name}/reload: hot swap from disk
  GET  /api/health           alive;  GET /api/ready: 200 when every model's worker runs, else 503
  GET  /metrics              Prometheus text (latency per model and stage, queue depth, rejects)
  /api/line/..., /stream.mjpg, /snapshot.jpg, /api/events: see fovea.serve.line_control
  GET  /                     the dashboard (static HTML + JS);  /docs: OpenAPI
  GET  /reports/...          anomaly reports of past runs (read-only, with --reports DIR)

Refusals: 400 corrupt/truncated image, 413 body or pixel count over the limit, 415 not an image,
401 missing/wrong API key (when one is set), 404 unknown model, 422 a model name that is not a
plain identifier (path-like), 429 + Retry-After when the model's queue is full.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles

from fovea.engine.results import prediction_record
from fovea.errors import ConfigError
from fovea.serve.batcher import QueueFull
from fovea.serve.decode import UploadRejected, check_content_type, decode_image
from fovea.serve.metrics import ServeMetrics
from fovea.serve.registry import ModelRegistry, check_model_name
from fovea.serve.render import encode, overlay as draw_overlay
from fovea.serve.streams import add_line_routes

STATIC_DIR = Path(__file__).parent / "static"
OPEN_PATHS = ("/api/health", "/api/ready", "/metrics", "/docs", "/openapi.json", "/static/", "/favicon")


@dataclass
class ServeConfig:
    """Server limits and options.

    api_key: when set, every /api, stream and report request needs it (header X-API-Key or
    query `key`, for <img> and EventSource), except health, ready, /metrics and the page itself.
    max_body_bytes: request body limit (413 beyond); max_pixels: per image, read from the header
    before decoding (413 beyond); max_files: images per request. max_batch / max_wait_ms /
    max_queue: micro-batching per model (429 when max_queue images wait).
    """

    api_key: str | None = None
    max_body_bytes: int = 32 << 20
    max_pixels: int = 40_000_000
    max_files: int = 64
    max_batch: int = 8
    max_wait_ms: float = 5.0
    max_queue: int = 64
    reports_dir: str | None = None
    stream_fps: float = 15.0

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_pixels", "max_files", "max_batch", "max_queue"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"ServeConfig.{name}={getattr(self, name)} must be >= 1")
        if self.reports_dir is not None and not Path(self.reports_dir).is_dir():
            raise ConfigError(f"--reports {self.reports_dir} is not a folder. Fix: pass the folder holding the "
                              "runs whose report.html files the dashboard should list")


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: 413 when Content-Length (or the bytes actually sent) pass `limit`."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await _too_large(self.limit, int(declared))(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge()
            return msg

        return await self.app(scope, limited, send)


class ApiKeyAuth:
    """ASGI middleware: 401 unless header X-API-Key or query `key` equals `key` (paths in OPEN_PATHS are open).

    A plain ASGI class rather than `@app.middleware("http")`, whose per-request task and stream
    plumbing costs every request (429s included) noticeably on a busy machine."""

    def __init__(self, app, key: str, on_reject=None):
        self.app, self.key, self.on_reject = app, key.encode(), on_reject

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and not _is_open(scope["path"]):
            headers = dict(scope.get("headers") or [])
            given = headers.get(b"x-api-key")
            if given is None:
                given = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("key", [""])[0].encode()
            if not secrets.compare_digest(given, self.key):
                if self.on_reject is not None:
                    self.on_reject()
                response = _error(401, "unauthorized", "this server needs an API key: send header X-API-Key "
                                  "(or ?key= for images and event streams)", {"WWW-Authenticate": "X-API-Key"})
                return await response(scope, receive, send)
        return await self.app(scope, receive, send)


def _too_large(limit: int, n: int | None) -> JSONResponse:
    size = f"{n} bytes" if n is not None else "more bytes"
    return JSONResponse({"error": "too_large", "detail": f"request body of {size} is over the limit of {limit} "
                         "bytes. Fix: send smaller or fewer images, or start the server with a larger "
                         "--max-body-mb"}, status_code=413)


def _error(status: int, kind: str, detail: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": kind, "detail": detail}, status_code=status, headers=headers)


def create_app(models: dict[str, Any] | None = None, config: ServeConfig | None = None,
               line_controller=None) -> FastAPI:
    """The app. models: name -> checkpoint path (str/Path) or a Predictor object.

    line_controller: a `fovea.serve.line_control.LineController` (default: a new one with the
    synthetic conveyor and the oracle classifier, or a served model by name).
    """
    cfg = config or ServeConfig()
    metrics = ServeMetrics()
    registry = ModelRegistry(on_batch=metrics.observe_batch, max_batch=cfg.max_batch,
                             max_wait_s=cfg.max_wait_ms / 1e3, max_queue=cfg.max_queue)
    for name, m in (models or {}).items():
        if isinstance(m, (str, Path)):
            registry.add(name, path=m)
        else:
            registry.add(name, predictor=m)
    if line_controller is None:
        from fovea.serve.line_control import LineController

        line_controller = LineController(registry, stream_fps=cfg.stream_fps)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        line_controller.close()
        registry.close()

    app = FastAPI(title="fovea serve", version="1", lifespan=lifespan,
                  description="Inference for fovea models of any task, line control and live view.")
    app.state.registry, app.state.metrics, app.state.config, app.state.line = registry, metrics, cfg, line_controller
    app.add_middleware(BodyLimit, limit=cfg.max_body_bytes)

    @app.exception_handler(BodyTooLarge)
    async def _body_too_large(request: Request, exc: BodyTooLarge):
        metrics.rejected.labels("too_large").inc()
        return _too_large(cfg.max_body_bytes, None)

    if cfg.api_key:  # outermost: a request without the key is refused before its body is read
        app.add_middleware(ApiKeyAuth, key=cfg.api_key, on_reject=metrics.rejected.labels("unauthorized").inc)

    _add_model_routes(app, registry, metrics, cfg)
    _add_service_routes(app, registry, metrics, cfg)
    add_line_routes(app, line_controller)
    return app


def _is_open(path: str) -> bool:
    return path == "/" or any(path.startswith(p) for p in OPEN_PATHS)


# ---------------------------------------------------------------------------------------- predict

async def _read_images(request: Request, cfg: ServeConfig) -> list[tuple[str, bytes]]:
    """(name, bytes) of each uploaded image: multipart fields `file`, or the raw body as one image."""
    ctype = request.headers.get("content-type", "")
    if ctype.lower().startswith("multipart/form-data"):
        # the parser's own file cap is loose (its refusal is a bare 400); the body limit bounds the
        # total and the count below answers 413 with the limit
        form = await request.form(max_files=4 * cfg.max_files + 16, max_fields=4 * cfg.max_files + 16)
        try:
            return await _form_images(form, cfg)
        finally:
            await form.close()
    check_content_type(ctype, "body")
    return [("body", await request.body())]


async def _form_images(form, cfg: ServeConfig) -> list[tuple[str, bytes]]:
    files = form.getlist("file")
    if not files:
        raise UploadRejected(400, "form", "the form holds no field named `file`",
                             "send each image as a multipart field `file` (repeatable)")
    if len(files) > cfg.max_files:
        raise UploadRejected(413, "form", f"{len(files)} images in one request, the limit is {cfg.max_files}",
                             "split the request")
    out = []
    for i, f in enumerate(files):
        if isinstance(f, str):
            raise UploadRejected(400, f"file[{i}]", "field `file` is text, not a file upload",
                                 "send it as a file part (filename and bytes)")
        name = (f.filename or f"file[{i}]")[-200:]
        check_content_type(f.content_type, name)
        out.append((name, await f.read()))
    return out


PREDICT_BODY_DOC = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
        "file": {"type": "array", "items": {"type": "string", "format": "binary"},
                 "description": "one or more images (repeat the field)"}}}},
    "image/*": {"schema": {"type": "string", "format": "binary"}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
    "responses": {"400": {"description": "corrupt or truncated image"}, "401": {"description": "API key needed"},
                  "404": {"description": "unknown model"},
                  "413": {"description": "body, file count or pixel count over the limit"},
                  "415": {"description": "not an image"}, "422": {"description": "model name not allowed"},
                  "429": {"description": "queue full; see Retry-After"}}}


def _add_model_routes(app: FastAPI, registry: ModelRegistry, metrics: ServeMetrics, cfg: ServeConfig) -> None:
    @app.post("/api/predict/{name}", summary="Predict one or more images with a served model",
              openapi_extra=PREDICT_BODY_DOC)
    async def predict(name: str, request: Request, overlay: bool = False):
        t0 = time.perf_counter()
        try:
            check_model_name(name)
        except ConfigError as exc:
            metrics.rejected.labels("bad_name").inc()
            return _error(422, "bad_model_name", str(exc))
        slot = registry.slots.get(name)
        if slot is None:
            metrics.rejected.labels("unknown_model").inc()
            return _error(404, "unknown_model", f"no model named {name!r}; loaded: {sorted(registry.slots)}. "
                                                "Fix: start the server with --model NAME=PATH")
        if slot.batcher.depth >= slot.batcher.max_queue:  # full: answer before reading or decoding the body
            return _queue_full(name, QueueFull(name, slot.batcher.depth, slot.batcher.max_queue, 1,
                                               slot.batcher.retry_after_s(1)))
        try:
            uploads = await _read_images(request, cfg)
            td = time.perf_counter()
            # decoding off the event loop keeps it answering (429s, health, streams) under load
            images = await asyncio.to_thread(lambda: [decode_image(d, nm, cfg.max_pixels) for nm, d in uploads])
        except UploadRejected as exc:
            reason = {413: "too_large", 415: "unsupported_type"}.get(exc.status, "bad_image")
            metrics.rejected.labels(reason).inc()
            metrics.requests.labels(name, str(exc.status)).inc()
            return _error(exc.status, reason, str(exc))
        metrics.latency.labels(name, "decode").observe(time.perf_counter() - td)
        try:
            jobs = slot.batcher.submit(images)
        except QueueFull as exc:
            return _queue_full(name, exc)
        metrics.queue_depth.labels(name).set(slot.batcher.depth)
        try:
            results = [await asyncio.wrap_future(j.future) for j in jobs]
        except Exception as exc:
            metrics.requests.labels(name, "500").inc()
            return _error(500, "predict_failed", f"model {name!r} failed on this batch: {exc}")
        metrics.queue_depth.labels(name).set(slot.batcher.depth)
        task = getattr(slot.predictor, "kind", "")
        records = [prediction_record(task, nm, r) for (nm, _), r in zip(uploads, results)]
        if overlay:
            tr = time.perf_counter()
            pngs = await asyncio.to_thread(lambda: [encode(_safe_overlay(im, r)) for im, r in zip(images, results)])
            for rec, png in zip(records, pngs):
                rec["overlay_png"] = base64.b64encode(png).decode("ascii")
            metrics.latency.labels(name, "render").observe(time.perf_counter() - tr)
        metrics.latency.labels(name, "total").observe(time.perf_counter() - t0)
        metrics.requests.labels(name, "200").inc()
        return {"model": name, "task": task, "version": slot.version, "predictions": records}

    def _queue_full(name: str, exc: QueueFull) -> JSONResponse:
        metrics.rejected.labels("queue_full").inc()
        metrics.requests.labels(name, "429").inc()
        return _error(429, "queue_full", str(exc), {"Retry-After": str(exc.retry_after_s)})

    @app.get("/api/models", summary="The served models")
    async def list_models():
        return {"models": [s.describe() for s in registry.slots.values()]}

    @app.post("/api/models/{name}/reload", summary="Reload a model from its path and swap it in")
    async def reload(name: str):
        try:
            check_model_name(name)
            if name not in registry.slots:
                return _error(404, "unknown_model", f"no model named {name!r}")
            slot = await asyncio.to_thread(registry.reload, name)
        except ConfigError as exc:
            return _error(422, "bad_model_name", str(exc))
        return slot.describe()


def _safe_overlay(image, result):
    try:
        return draw_overlay(image, result)
    except TypeError:
        return image


# ---------------------------------------------------------------------------------------- service

def _add_service_routes(app: FastAPI, registry: ModelRegistry, metrics: ServeMetrics, cfg: ServeConfig) -> None:
    @app.get("/api/health", summary="The process answers")
    async def health():
        return {"status": "ok"}

    @app.get("/api/ready", summary="Every model is loaded and its worker runs")
    async def ready():
        down = [n for n, s in registry.slots.items() if s.batcher is None or not s.batcher.alive]
        body = {"ready": not down, "models": sorted(registry.slots), "down": down}
        return JSONResponse(body, status_code=200 if not down else 503)

    @app.get("/metrics", summary="Prometheus metrics")
    async def prom():
        for n, s in registry.slots.items():
            metrics.queue_depth.labels(n).set(s.batcher.depth if s.batcher else 0)
        return PlainTextResponse(metrics.text(), media_type="text/plain; version=0.0.4")

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/api/reports", summary="Anomaly reports of past runs (with --reports DIR)")
    async def reports():
        if cfg.reports_dir is None:
            return {"reports": []}
        root = Path(cfg.reports_dir)
        found = sorted(root.rglob("report.html"), key=lambda p: p.stat().st_mtime, reverse=True)[:200]
        return {"reports": [{"name": str(p.parent.relative_to(root)) or ".",
                             "url": "/reports/" + str(p.relative_to(root)),
                             "mtime": p.stat().st_mtime} for p in found]}

    if cfg.reports_dir is not None:  # Starlette's StaticFiles refuses paths that leave the folder
        app.mount("/reports", StaticFiles(directory=cfg.reports_dir, html=True), name="reports")

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon():
        return Response(status_code=204)
