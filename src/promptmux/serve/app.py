"""The HTTP server: one bundle answers every one of its tasks, with cross-request micro-batching.

    POST /v1/predict   items of any tasks -> one prediction each (see schemas.PredictResponse)
    GET  /v1/tasks     each task's type, labels, whether it reads pairs, prompt; the limits
    GET  /healthz      liveness and queue depth
    GET  /metrics      Prometheus text
    GET  /             the playground page;   GET /docs: OpenAPI docs

Every error is JSON of one shape (schemas.ErrorResponse) and names the item index and field at
fault. Input problems are found before anything is queued, so a bad request never reaches the
model and cannot disturb the requests in flight.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.staticfiles import StaticFiles

from promptmux.errors import DataError
from promptmux.serve.batcher import MicroBatcher, QueueFull
from promptmux.serve.metrics import CONTENT_TYPE, ServerMetrics
from promptmux.serve.predictor import Predictor
from promptmux.serve.schemas import (
    ErrorResponse,
    PredictItem,
    PredictRequest,
    PredictResponse,
    ServeSettings,
    TasksResponse,
)
from promptmux.serve.tasks import describe_tasks, shape_result
from promptmux.tasks.spec import Example

log = logging.getLogger("promptmux.serve")
ROUTES = {"/v1/predict", "/v1/tasks", "/healthz", "/metrics", "/", "/docs", "/openapi.json"}
DOCS_ASSETS = "/docs-assets"
ERROR_KINDS = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "too_large", 422: "invalid_request", 500: "internal", 503: "busy", 504: "timeout"}
ERRORS = {code: {"model": ErrorResponse} for code in (413, 422, 500, 503, 504)}


class ApiError(Exception):
    """An error answer: HTTP status, a message, and per-item details."""

    def __init__(self, status: int, message: str, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.details = status, message, details or []


def create_app(predictor: Predictor, settings: ServeSettings | None = None) -> FastAPI:
    """Build the app around a loaded `Predictor`; the batcher starts with the first event loop."""
    settings = settings or ServeSettings()
    metrics = ServerMetrics()
    batcher = MicroBatcher(predictor, settings.max_batch_size, settings.max_wait_ms, settings.max_queue, metrics, settings.workers)
    tasks = describe_tasks(predictor)
    pair_of = {t["name"]: t["pair"] for t in tasks}
    page = (resources.files("promptmux.serve") / "static" / "index.html").read_text(encoding="utf-8")
    started = time.time()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        yield
        await batcher.stop()
        batcher.close()

    assets = swagger_ui_assets()
    app = FastAPI(
        title="promptmux",
        version="1",
        summary="One multi-task bundle: every task behind one endpoint, micro-batched across requests.",
        lifespan=lifespan,
        docs_url=None if assets else "/docs",
        redoc_url=None,  # ReDoc loads its script from a CDN; /docs is the documented page
    )
    if assets is not None:
        _serve_docs_offline(app, assets)
    app.state.predictor, app.state.settings, app.state.metrics, app.state.batcher = predictor, settings, metrics, batcher

    def error_response(status: int, message: str, details: list[dict[str, Any]] | None = None) -> JSONResponse:
        kind = ERROR_KINDS.get(status, "error")
        metrics.errors.inc(kind=kind)
        body = {"error": {"code": kind, "message": message, "details": details or []}}
        return JSONResponse(body, status_code=status)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.details)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [_validation_detail(e) for e in exc.errors()]
        first = details[0]
        where = _where(first.get("item"), first.get("field"))
        more = f" (and {len(details) - 1} more)" if len(details) > 1 else ""
        return error_response(422, f"{where}: {first['message']}{more}", details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = f"no route {request.method} {request.url.path}" if exc.status_code in (404, 405) else str(exc.detail)
        return error_response(exc.status_code, message)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # A bug, not a bad request: still JSON, and the worker and other requests carry on.
        log.exception("unhandled error in %s %s", request.method, request.url.path)
        return error_response(500, f"internal error: {type(exc).__name__}: {exc}")

    @app.post("/v1/predict", response_model=PredictResponse, responses=ERRORS)
    async def predict(body: PredictRequest) -> dict[str, Any]:
        """Predict every item; items of different tasks share forward passes with other requests."""
        if len(body.items) > settings.max_items:
            raise ApiError(413, f"too many items: {len(body.items)} (limit {settings.max_items} per request)", [{"item": None, "field": "items", "message": f"at most {settings.max_items} items"}])
        valid, truncated = _validate(body.items, predictor, pair_of, settings)
        try:
            raw = await asyncio.wait_for(batcher.predict(valid), settings.timeout_s)
        except QueueFull as e:
            raise ApiError(503, f"server busy: {e}") from None
        except TimeoutError:
            raise ApiError(504, f"request timed out after {settings.timeout_s:g} s waiting for predictions") from None
        failed = [{"item": i, "field": None, "message": f"{type(e).__name__}: {e}"} for i, e in enumerate(raw) if isinstance(e, BaseException)]
        if failed:  # this request's own items; other requests' items are unaffected
            raise ApiError(500, f"prediction failed for {_where(failed[0]['item'], None)}: {failed[0]['message']}", failed)
        results = []
        for i, (item, out) in enumerate(zip(body.items, raw)):
            shaped = shape_result(predictor.tasks[item.task], out, body.top_k, body.return_probabilities)
            metrics.items.inc(task=item.task)
            results.append({"index": i, "task": item.task, **shaped, **({"truncated": True} if i in truncated else {})})
        return {"results": results}

    @app.get("/v1/tasks", response_model=TasksResponse)
    async def list_tasks() -> dict[str, Any]:
        """The bundle's tasks and the server's limits."""
        return {"tasks": tasks, "limits": settings.limits()}

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        """Liveness: 200 while the batching worker runs, 503 if it has stopped."""
        ok = batcher.healthy
        body = {"status": "ok" if ok else "unhealthy", "tasks": len(tasks), "queue_depth": batcher.queue_depth, "uptime_s": round(time.time() - started, 3)}
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prometheus() -> PlainTextResponse:
        """Requests, items, batch sizes, latency and errors in the Prometheus text format."""
        return PlainTextResponse(metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def playground() -> HTMLResponse:
        return HTMLResponse(page)

    app.add_middleware(ObserveAndLimit, metrics=metrics, max_body_bytes=settings.max_body_bytes, on_error=error_response)  # type: ignore[arg-type]
    return app


def swagger_ui_assets() -> Path | None:
    """The Swagger UI files of the `swagger-ui-bundle-v2` package, when it is installed.

    FastAPI's own /docs page loads Swagger UI from a CDN, which leaves it blank on a machine
    without internet access; with the files served from here it works anywhere.
    """
    try:
        import swagger_ui_bundle
    except ImportError:
        return None
    folder = Path(swagger_ui_bundle.swagger_ui_path)
    return folder if (folder / "swagger-ui-bundle.js").is_file() else None


def _serve_docs_offline(app: FastAPI, assets: Path) -> None:
    app.mount(DOCS_ASSETS, StaticFiles(directory=assets), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - API docs",
            swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon-32x32.png",
        )


def _where(item: int | None, field: str | None) -> str:
    if item is None:
        return field or "body"
    return f"items[{item}]" + (f".{field}" if field else "")


def _validation_detail(error: dict[str, Any]) -> dict[str, Any]:
    """A pydantic error as {item, field, message}; `loc` looks like ('body', 'items', 3, 'task')."""
    loc = [p for p in error.get("loc", ()) if p != "body"]
    if error.get("type") == "json_invalid":
        loc = []  # its loc holds a character position, not a field
    item = None
    if len(loc) >= 2 and loc[0] == "items" and isinstance(loc[1], int):
        item, loc = loc[1], loc[2:]
    field = ".".join(str(p) for p in loc) or None
    message = error.get("msg", "invalid")
    if error.get("type") == "json_invalid":
        message = f"the body is not valid JSON ({error.get('ctx', {}).get('error', message)})"
    elif error.get("type") == "missing" and field is None and item is None:
        message = "expected a JSON body like {\"items\": [{\"task\": ..., \"text\": ...}]}"
    return {"item": item, "field": field, "message": message}


def _validate(items: list[PredictItem], predictor: Predictor, pair_of: dict[str, bool | None], settings: ServeSettings) -> tuple[list[tuple[str, Example]], set[int]]:
    """Check every item; raise one ApiError listing all problems (422 beats 413), or return examples."""
    problems: list[tuple[int, dict[str, Any]]] = []
    valid: list[tuple[str, Example]] = []
    truncated: set[int] = set()
    for i, item in enumerate(items):

        def bad(status: int, field: str, message: str, i: int = i) -> None:
            problems.append((status, {"item": i, "field": field, "message": message}))

        if item.task not in predictor.tasks:
            bad(422, "task", f"unknown task {item.task!r}; this bundle has: {', '.join(predictor.tasks)}")
            continue
        info, pair = predictor.tasks[item.task], pair_of[item.task]
        if item.text is not None and (item.text_a is not None or item.text_b is not None):
            bad(422, "text", "give either text, or text_a and text_b, not both")
            continue
        if item.text is None:
            if item.text_a is None or item.text_b is None:
                missing = "text" if item.text_a is None and item.text_b is None else "text_b" if item.text_b is None else "text_a"
                bad(422, missing, "field required: give text, or text_a and text_b" if missing == "text" else "field required: a pair needs text_a and text_b")
                continue
            if info.type == "token" or pair is False:
                bad(422, "text_a", f"task {item.task!r} ({info.type}) reads one text: give text, not text_a/text_b")
                continue
        elif pair:
            bad(422, "text", f"task {item.task!r} reads text pairs: give text_a and text_b")
            continue
        texts = {"text": item.text} if item.text is not None else {"text_a": item.text_a, "text_b": item.text_b}
        for field, value in list(texts.items()):
            assert value is not None
            if len(value) > settings.max_text_chars:
                if settings.truncate:
                    texts[field] = value[: settings.max_text_chars]
                    truncated.add(i)
                else:
                    bad(413, field, f"text too long: {len(value)} characters (limit {settings.max_text_chars})")
        if problems and problems[-1][1]["item"] == i:
            continue
        raw: Any = texts["text"] if "text" in texts else (texts["text_a"], texts["text_b"])
        try:
            valid.append((item.task, predictor.example(item.task, raw, item.meta)))
        except DataError as e:
            bad(422, next(iter(texts)), str(e))
    if problems:
        status = 422 if any(s == 422 for s, _ in problems) else 413
        details = [d for _, d in problems]
        first = details[0]
        more = f" (and {len(details) - 1} more)" if len(details) > 1 else ""
        raise ApiError(status, f"{_where(first['item'], first['field'])}: {first['message']}{more}", details)
    return valid, truncated


class _ClientGone(Exception):
    """The client disconnected before sending its whole body."""


class ObserveAndLimit:
    """ASGI middleware: refuses oversized bodies with a 413 before they are parsed, and counts
    every request with its route, status and duration.

    The body is read here (stopping at the first byte over the limit, so a huge upload is never
    held in memory) and replayed to the app as one message. Checking inside the app instead
    would be too late: FastAPI turns errors raised while it reads the body into a generic 400.
    """

    def __init__(self, app: Callable[..., Awaitable[None]], metrics: ServerMetrics, max_body_bytes: int, on_error: Callable[..., JSONResponse]) -> None:
        self.app, self.metrics, self.max_body_bytes, self.on_error = app, metrics, max_body_bytes, on_error

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Awaitable[dict]], send: Callable[..., Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        path = scope.get("path", "")
        route = path if path in ROUTES else DOCS_ASSETS if path.startswith(DOCS_ASSETS + "/") else "other"  # bounded label set
        status = {"code": 500}

        async def counting_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            try:
                body = await self._read_body(scope, receive)
            except _ClientGone:
                status["code"] = 499  # nginx's code for "client closed the request"; nothing to answer
                return
            if body is None:
                limit = self.max_body_bytes
                response = self.on_error(413, f"request body too large (limit {limit} bytes)", [{"item": None, "field": "body", "message": f"at most {limit} bytes"}])
                await response(scope, receive, counting_send)
                return
            replayed = False

            async def replay() -> dict:
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()  # later calls wait for the disconnect, as usual

            await self.app(scope, replay, counting_send)
        finally:
            self.metrics.requests.inc(route=route, status=str(status["code"]))
            self.metrics.latency.observe(time.perf_counter() - start, route=route)

    async def _read_body(self, scope: dict[str, Any], receive: Callable[..., Awaitable[dict]]) -> bytes | None:
        """The whole body, or None as soon as it is known to exceed the limit."""
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise _ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)
