"""A web page to draw digits on and a JSON API, around one model: :func:`create_app` builds the ASGI app.

Requests are parsed on the event loop (bodies are read asynchronously, so a slow
upload stalls nobody, and each body has a deadline); what a request's images would
cost to decode is read from their headers and capped before any is decoded;
decoding and preprocessing run in a small thread pool (small requests in threads of
their own), and inference in a pool of one thread, so torch never runs two forward
passes at once and never fights itself for cores. Nothing a request sends is written to disk and
no request names a file on the server: uploads are parsed in memory, the page's
assets are read from the package when the app is made.

Needs the ``serve`` extra (FastAPI, uvicorn, python-multipart).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import math
import os
import re
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.datastructures import Headers, MutableHeaders, UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rnnmnist import __version__
from rnnmnist.images.decode import MAX_PIXELS, Failed, pixel_count, prepare
from rnnmnist.images.predict import Prediction, predict_digits
from rnnmnist.images.preprocess import ImageError, to_mnist
from rnnmnist.training import checkpoint as ckpt_io
from rnnmnist.training.device import resolve_device, usable_precision
from rnnmnist.training.model import sequence_shape

MAX_BODY = 10 * 1024 * 1024  # bytes per request; larger ones get 413
MAX_BATCH = 256  # images per batch request
# Decoding costs time and memory by the pixel (about 11 ms and 11 MB per megapixel measured), and a
# 49 MP PNG can be 6 KB: what a request may decode is capped by pixels, read from the images' headers
# before any is decoded. One image may have MAX_PIXELS (50 MP, as `rnnmnist predict`); one request this
# many in all (a 49 MP image, or five 12 MP photos), so a request holds a thread about a second at most.
MAX_REQUEST_PIXELS = 64_000_000
# A request that decodes at most this many pixels in all (a drawing, a scan of a digit, a small photo) is
# prepared in threads of its own, so it never queues behind large images that others send.
LIGHT_PIXELS = 4_000_000
BODY_TIMEOUT = 30.0  # seconds for a request's whole body to arrive; a stalled upload gets 408
MAX_NAME = 200  # characters of an input's name echoed back
PIXELS_SIDE = 28
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
STATIC = {  # URL path -> (package file, media type); read once, when the app is made
    "/": ("index.html", "text/html; charset=utf-8"),
    "/docs": ("docs.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/docs.js": ("docs.js", "text/javascript; charset=utf-8"),
    "/static/style.css": ("style.css", "text/css; charset=utf-8"),
    "/favicon.svg": ("favicon.svg", "image/svg+xml"),
}
SECURITY_HEADERS = {
    # The page loads nothing from elsewhere and runs no inline code: say so, so a browser enforces it.
    "content-security-policy": (
        "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}
Log = Callable[[str], None]


class ApiError(Exception):
    """A request the API refuses: answered with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class BodyTooLarge(Exception):
    pass


class BodyCut(Exception):
    """A body not read to its end (too slow, or the server stopping): answered, then the connection closed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": " ".join(str(message).split())}, status_code=status)


# --- request bodies: what each item is before preprocessing


Source = bytes | np.ndarray | str  # encoded image, grayscale pixels (H, W) in [0, 1], or why the item is unusable


def _name(value: Any, default: str) -> str:
    if not isinstance(value, str) or not value.strip():
        return default
    clean = "".join(c for c in value if c.isprintable())
    return Path(clean.replace("\\", "/")).name[:MAX_NAME] or default  # a client's path says nothing to us


def _pixels(value: Any) -> np.ndarray:
    """28x28 numbers, in [0, 1] or 0-255 (when any is above 1), as grayscale (28, 28) in [0, 1]."""
    if not isinstance(value, list) or len(value) != PIXELS_SIDE:
        raise ValueError(f"pixels must be {PIXELS_SIDE} rows of {PIXELS_SIDE} numbers")
    for row in value:
        if not isinstance(row, list) or len(row) != PIXELS_SIDE:
            raise ValueError(f"pixels must be {PIXELS_SIDE} rows of {PIXELS_SIDE} numbers")
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in row):
            raise ValueError("pixels must be numbers")
    try:
        a = np.asarray(value, dtype=np.float64)  # (28, 28)
    except OverflowError:  # an integer beyond any float (JSON allows 10**400)
        raise ValueError("pixels must be finite numbers in [0, 1] or 0-255") from None
    if not np.isfinite(a).all() or a.min() < 0 or a.max() > 255:
        raise ValueError("pixels must be finite numbers in [0, 1] or 0-255")
    return (a / 255.0 if a.max() > 1 else a).astype(np.float32)


_WRAPPING = re.compile(r"[ \t\r\n]+")


def _base64_image(value: Any) -> bytes:
    if not isinstance(value, str):
        raise ValueError("image_base64 must be a string")
    if value.startswith("data:"):  # a data URL, as a browser's canvas.toDataURL() gives
        value = value.partition(",")[2]
    # Line breaks as `base64` (76 columns) and Python's encodebytes write them; anything else is refused.
    value = _WRAPPING.sub("", value)
    if not value:
        raise ValueError("image_base64 is empty")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("image_base64 is not valid base64") from None


def _json_item(item: Any, default_name: str) -> tuple[str, Source]:
    """One image of a JSON body: {"image_base64": ...} or {"pixels": [[...] x 28]}, and an optional "name"."""
    if not isinstance(item, dict):
        raise ValueError('an image must be an object with "image_base64" or "pixels"')
    name = _name(item.get("name"), default_name)
    given = [k for k in ("image_base64", "pixels") if k in item]
    if len(given) != 1:
        raise ValueError('give one of "image_base64" (an encoded image) or "pixels" (28x28 numbers)')
    if given[0] == "pixels":
        return name, _pixels(item["pixels"])
    return name, _base64_image(item["image_base64"])


class _InMemoryMultiPart(MultiPartParser):
    # Starlette spools uploads over 1 MB to a temporary file; keep every upload (at most MAX_BODY) in memory.
    spool_max_size = MAX_BODY + 1


async def _multipart(request: Request, body: bytes) -> list[tuple[str, bytes]]:
    async def stream() -> Any:
        yield body

    try:
        form = await _InMemoryMultiPart(request.headers, stream(), max_files=MAX_BATCH, max_fields=MAX_BATCH).parse()
    except MultiPartException as e:
        raise ApiError(400, f"bad multipart body: {e.message}") from None
    files = []
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            files.append((_name(value.filename, key), await value.read()))
    await form.close()
    return files


async def read_items(request: Request, batch: bool) -> list[tuple[str, Source]]:
    """The images a request sends, by its content type; a malformed request raises :class:`ApiError`."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await request.body()
    if kind == "multipart/form-data":
        files = await _multipart(request, body)
        if not files:
            raise ApiError(400, "the multipart body holds no file (send the image as a file field, e.g. 'file')")
        if not batch and len(files) > 1:
            raise ApiError(400, "send one file to /api/predict; several go to /api/predict/batch")
        return list(files)
    if kind == "application/json":
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError):
            raise ApiError(400, "the body is not valid JSON") from None
        try:
            if not batch:
                return [_json_item(payload, "image")]
            images = payload.get("images") if isinstance(payload, dict) else None
            if not isinstance(images, list) or not images:
                raise ValueError('a batch is {"images": [ {"image_base64": ...} or {"pixels": ...}, ... ]}')
        except ValueError as e:
            raise ApiError(400, str(e)) from None
        items: list[tuple[str, Source]] = []
        for i, item in enumerate(images[: MAX_BATCH + 1]):
            try:
                items.append(_json_item(item, f"images[{i}]"))
            except ValueError as e:  # in a batch, a bad item fails alone, as a bad file does in predict
                items.append((f"images[{i}]", str(e)))
        return items
    if (kind.startswith("image/") or kind == "application/octet-stream") and not batch:
        return [("image", body)]
    raise ApiError(
        415,
        f"unsupported content type {kind or '(none)'!r}: send multipart/form-data, application/json"
        + ("" if batch else ", or the image itself (image/png, image/jpeg, ...)"),
    )


def _prepare(source: Source) -> np.ndarray | Failed:
    """The 28x28 digit the network sees, made as `rnnmnist predict` makes it, or why it cannot be."""
    if isinstance(source, str):
        return Failed(source)
    if isinstance(source, bytes):
        return prepare(source)  # predict's per-input boundary: never raises for an image
    try:
        return to_mnist(source)
    except ImageError as e:
        return Failed(str(e))


def _pixels_to_decode(source: Source) -> int:
    """The pixels decoding ``source`` would cost, from its header only (a larger image is refused undecoded)."""
    if isinstance(source, bytes):
        pixels = pixel_count(source)
        return pixels if pixels <= MAX_PIXELS else 0
    return source.size if isinstance(source, np.ndarray) else 0


def decode_cost(items: list[tuple[str, Source]]) -> int:
    """The pixels preparing ``items`` would decode in all, read from their headers: cheap, decodes nothing."""
    return sum(_pixels_to_decode(source) for _, source in items)


def _prepare_all(items: list[tuple[str, Source]]) -> list[tuple[str, np.ndarray | Failed]]:
    return [(name, _prepare(source)) for name, source in items]


def _finite(value: Any) -> Any:
    """Metrics as JSON allows them: NaN and infinities become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value if isinstance(value, str | int | float | bool | type(None)) else str(value)


# --- OpenAPI descriptions (documentation only: responses are built by hand)


class PredictionOut(BaseModel):
    input: str = Field(description="the uploaded file's name, the JSON item's name, or 'image'")
    prediction: int = Field(description="the digit, 0-9")
    confidence: float
    probabilities: list[float] = Field(description="10 numbers, digits 0-9")
    top3: list[tuple[int, float]]
    trace: list[list[float]] | None = Field(
        None, description="with ?trace=true: 10 probabilities after every step (28 rows, or 784 pixels)"
    )
    decided_at: int | None = Field(
        None, description="with ?trace=true: the step (1-based) from which the answer stayed the top class"
    )
    image: list[list[float]] | None = Field(None, description="with ?show=true: the 28x28 input the network saw")


class ErrorOut(BaseModel):
    error: str


class BatchOut(BaseModel):
    predictions: list[dict[str, Any]] = Field(
        description="one record per image, in order; a failed one is {input, error}"
    )


_ITEM_SCHEMA = {
    "type": "object",
    "properties": {
        "image_base64": {"type": "string", "description": "an encoded image (PNG, JPEG, ...), base64 or a data URL"},
        "pixels": {
            "type": "array",
            "description": "28 rows of 28 numbers in [0, 1] (or 0-255), any polarity",
            "items": {"type": "array", "items": {"type": "number"}},
        },
        "name": {"type": "string", "description": "echoed back as 'input'"},
    },
}
_PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}}
            },
            "application/json": {"schema": _ITEM_SCHEMA},
            "image/png": {"schema": {"type": "string", "format": "binary"}},
            "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
_BATCH_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"files": {"type": "array", "items": {"type": "string", "format": "binary"}}},
                }
            },
            "application/json": {
                "schema": {"type": "object", "properties": {"images": {"type": "array", "items": _ITEM_SCHEMA}}}
            },
        },
    }
}
_ERRORS = {code: {"model": ErrorOut} for code in (400, 413, 415, 422)}


# --- the ASGI app


# A Host header: a name or IPv4 address, or an IPv6 address in brackets; then an optional port, ASCII digits only.
_HOST = re.compile(r"(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<name>[^\[\]:]+))(?::[0-9]{1,5})?")


def host_name(host: str) -> str | None:
    """The name (or address) in a Host header, lower case and without brackets or port; None if malformed."""
    match = _HOST.fullmatch(host)
    if match is None:
        return None
    return (match["ipv6"] or match["name"]).lower()


class Reading:
    """The request bodies being read: each has until its deadline, and all are cut short when the server stops."""

    def __init__(self, timeout: float) -> None:
        self.timeout, self.stopping = timeout, False
        self._deadlines: set[asyncio.Timeout] = set()

    def stop(self) -> None:
        """Cut every body being read short (each gets 503), and any that starts later; call on the event loop."""
        self.stopping = True
        for deadline in self._deadlines:
            deadline.reschedule(asyncio.get_running_loop().time())

    def receiver(self, receive: Receive, max_body: int) -> Receive:
        """``receive`` for one request, refusing a body over ``max_body`` bytes, late, or read while stopping."""
        received, complete = 0, False
        deadline = asyncio.get_running_loop().time() + self.timeout

        async def limited_receive() -> Message:
            nonlocal received, complete
            if complete:  # the body is in: what follows is only the client's going away
                return await receive()
            try:
                if self.stopping:
                    raise TimeoutError
                async with asyncio.timeout_at(deadline) as cut:
                    self._deadlines.add(cut)
                    try:
                        message = await receive()
                    finally:
                        self._deadlines.discard(cut)
            except TimeoutError:
                if self.stopping:
                    raise BodyCut(503, "the server is stopping; send the request again later") from None
                raise BodyCut(408, f"the request body did not arrive within {self.timeout:g} s") from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_body:  # no Content-Length, or a false one
                    raise BodyTooLarge
                complete = not message.get("more_body", False)
            return message

        return limited_receive


class _Guard:
    """Around every request: the Host check, the body's size and time limits, security headers and the log line."""

    def __init__(
        self, app: ASGIApp, max_body: int, allowed_hosts: tuple[str, ...] | None, log: Log | None, reading: Reading
    ) -> None:
        self.app, self.max_body, self.allowed_hosts, self.log = app, max_body, allowed_hosts, log
        self.reading = reading

    def _refusal(self, headers: Headers) -> JSONResponse | None:
        if self.allowed_hosts is not None:
            host = headers.get("host", "")
            if host_name(host) not in self.allowed_hosts:
                return _error(400, f"unexpected Host header {host!r}: this server answers to {self.allowed_hosts[0]}")
        length = headers.get("content-length")
        if length is not None:
            if not re.fullmatch("[0-9]+", length):
                return _error(400, "bad Content-Length header")
            if int(length) > self.max_body:
                return _error(413, f"the request is over the {self.max_body // (1024 * 1024)} MB limit")
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), "500"

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = str(message["status"])
                headers = MutableHeaders(scope=message)
                for key, value in SECURITY_HEADERS.items():
                    headers.setdefault(key, value)
            await send(message)

        try:
            refusal = self._refusal(Headers(scope=scope))
            if refusal is not None:
                await refusal(scope, receive, send_with_headers)
            else:
                await self.app(scope, self.reading.receiver(receive, self.max_body), send_with_headers)
        except asyncio.CancelledError:
            if status == "500":  # not answered: the server is stopping, past its graceful timeout
                status = "cancelled"
            raise
        finally:
            if self.log is not None:
                client = scope.get("client") or ("-", 0)
                query = scope.get("query_string", b"").decode("latin-1")
                target = scope["path"] + (f"?{query}" if query else "")
                self.log(
                    f"{time.strftime('%Y-%m-%d %H:%M:%S')} {client[0]} {scope['method']} {target} {status} "
                    f"{1000 * (time.perf_counter() - started):.1f} ms"
                )


def _read_assets() -> dict[str, tuple[bytes, str]]:
    folder = resources.files("rnnmnist") / "static"
    return {path: ((folder / name).read_bytes(), media) for path, (name, media) in STATIC.items()}


def create_app(
    checkpoint_path: str | Path,
    device: str = "auto",
    *,
    log: Log | None = None,
    allowed_hosts: tuple[str, ...] | None = None,
    max_body: int = MAX_BODY,
    max_request_pixels: int = MAX_REQUEST_PIXELS,
    body_timeout: float = BODY_TIMEOUT,
    workers: int | None = None,
) -> FastAPI:
    """The app serving the model in ``checkpoint_path``, loaded once, on ``device``.

    ``log`` receives one line per request; ``allowed_hosts`` (names, no ports), when
    given, are the only Host headers answered (for a server on loopback, this stops
    DNS-rebinding pages from reaching it); ``workers`` threads decode and preprocess.
    A request may send ``max_body`` bytes, within ``body_timeout`` seconds, of images
    that decode to ``max_request_pixels`` in all. ``app.state.stop_reading()``, called
    on the event loop when the server begins to stop, answers the uploads still
    arriving with 503 rather than leaving them to be cancelled.
    """
    dev = resolve_device(device)
    model, ckpt = ckpt_io.load_model(checkpoint_path, dev)
    precision = usable_precision(ckpt.config.precision, dev).name
    steps, _ = sequence_shape(ckpt.config.mode)
    assets = _read_assets()
    workers = workers or min(4, os.cpu_count() or 1)
    prep_pool = ThreadPoolExecutor(workers, thread_name_prefix="rnnmnist-prepare")
    light_pool = ThreadPoolExecutor(2, thread_name_prefix="rnnmnist-prepare-light")  # see LIGHT_PIXELS
    model_pool = ThreadPoolExecutor(1, thread_name_prefix="rnnmnist-model")  # one forward pass at a time
    # The first forward pass allocates and picks kernels: do it now rather than in the first request.
    predict_digits(model, precision, [("warm-up", np.zeros((28, 28), dtype=np.float32))], model.directions == 1)
    model_info = {
        "rnnmnist_version": __version__,
        "checkpoint": Path(checkpoint_path).name,
        "device": str(dev),
        "precision": precision,
        "steps": steps,
        "trace": model.directions == 1,
        "config": _finite(ckpt.config.to_dict()),
        "metrics": _finite(ckpt.metrics),
        "limits": {
            "max_request_bytes": max_body,
            "max_batch": MAX_BATCH,
            "max_image_pixels": MAX_PIXELS,
            "max_request_pixels": max_request_pixels,
            "body_timeout_s": body_timeout,
        },
    }
    reading = Reading(body_timeout)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        yield
        prep_pool.shutdown(cancel_futures=True)
        light_pool.shutdown(cancel_futures=True)
        model_pool.shutdown(cancel_futures=True)

    app = FastAPI(
        title="rnnmnist",
        version=__version__,
        description="Predict the digit in an image with a recurrent network that reads it row by row.",
        docs_url=None,  # FastAPI's docs page loads Swagger UI from a CDN; /docs is served from the package instead
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.model, app.state.checkpoint, app.state.stop_reading = model, ckpt, reading.stop

    async def in_pool(pool: ThreadPoolExecutor, func: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(pool, func, *args)

    async def predictions(request: Request, batch: bool, trace: bool, show: bool) -> list[dict[str, Any]]:
        if trace and model.directions != 1:
            raise ApiError(400, "a reading trace needs a one-directional model; this one is bidirectional")
        items = await read_items(request, batch)
        if len(items) > MAX_BATCH:
            raise ApiError(400, f"a batch holds at most {MAX_BATCH} images")
        cost = await in_pool(light_pool, decode_cost, items)
        if cost > max_request_pixels:  # refused before anything is decoded
            raise ApiError(
                413,
                f"the images add up to {cost / 1e6:.1f} MP, over the {max_request_pixels / 1e6:.0f} MP one request "
                "may decode: send them in several requests",
            )
        named = await in_pool(light_pool if cost <= LIGHT_PIXELS else prep_pool, _prepare_all, items)
        results: list[Prediction] = await in_pool(model_pool, predict_digits, model, precision, named, trace)
        records = []
        for r in results:
            record = r.to_json()
            if show and r.digit is not None:
                record["image"] = [[round(float(v), 3) for v in row] for row in r.digit]
            records.append(record)
        return records

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError) -> JSONResponse:
        return _error(e.status, e.message)

    @app.exception_handler(BodyTooLarge)
    async def too_large(request: Request, e: BodyTooLarge) -> JSONResponse:
        return _error(413, f"the request is over the {max_body // (1024 * 1024)} MB limit")

    @app.exception_handler(BodyCut)
    async def cut(request: Request, e: BodyCut) -> JSONResponse:
        response = _error(e.status, e.message)
        response.headers["connection"] = "close"  # the rest of the body is still on its way: do not read it
        return response

    @app.exception_handler(ClientDisconnect)
    async def gone(request: Request, e: ClientDisconnect) -> JSONResponse:
        return _error(400, "the client went away before sending the whole request")  # to nobody: for the log

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException) -> JSONResponse:
        return _error(e.status_code, e.detail)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        problems = [
            f"{'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg', 'invalid')}" for err in e.errors()
        ]
        return _error(422, "; ".join(problems) or "invalid request")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, e: Exception) -> JSONResponse:
        # The last resort of a server: the client gets JSON without internals, the log gets the cause.
        if log is not None:
            log(f"internal error on {request.method} {request.url.path}: {type(e).__name__}: {e}")
        return _error(500, f"internal error ({type(e).__name__}); see the server's log")

    def page(path: str) -> Callable[[], Awaitable[Response]]:
        body, media = assets[path]

        async def serve_asset() -> Response:
            return Response(body, media_type=media)

        return serve_asset

    for path in STATIC:
        app.add_api_route(path, page(path), methods=["GET", "HEAD"], include_in_schema=False)

    @app.get("/api/health", summary="Is the server up?")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/model", summary="The model served: config, metrics, rnnmnist version, limits")
    async def model_details() -> dict[str, Any]:
        return model_info

    @app.post(
        "/api/predict",
        summary="Predict the digit in one image",
        description=(
            "Send an image file (multipart field `file`), the image itself as the body (image/png, ...), or JSON "
            '`{"image_base64": ...}` or `{"pixels": [[28 numbers] x 28]}`. The image is made MNIST-like exactly '
            "as `rnnmnist predict` does. The answer is `predict --json`'s record."
        ),
        response_model=None,
        responses={200: {"model": PredictionOut}, **_ERRORS},
        openapi_extra=_PREDICT_BODY,
    )
    async def predict(
        request: Request,
        trace: bool = Query(False, description="add the reading trace and decided_at"),
        show: bool = Query(False, description="add the 28x28 image the network saw"),
    ) -> JSONResponse:
        (record,) = await predictions(request, False, trace, show)
        return JSONResponse(record, status_code=422 if "error" in record else 200)

    @app.post(
        "/api/predict/batch",
        summary=f"Predict many images (at most {MAX_BATCH})",
        description=(
            "Multipart with one file field per image (e.g. `files`), or JSON "
            '`{"images": [{"image_base64": ...} or {"pixels": ...}, ...]}`. An image that cannot be used gets '
            '`{"input", "error"}` in its place and the others are still predicted.'
        ),
        response_model=None,
        responses={200: {"model": BatchOut}, **_ERRORS},
        openapi_extra=_BATCH_BODY,
    )
    async def predict_batch(
        request: Request,
        trace: bool = Query(False, description="add each image's reading trace and decided_at"),
        show: bool = Query(False, description="add each 28x28 image the network saw"),
    ) -> dict[str, Any]:
        return {"predictions": await predictions(request, True, trace, show)}

    app.add_middleware(_Guard, max_body=max_body, allowed_hosts=allowed_hosts, log=log, reading=reading)
    return app
