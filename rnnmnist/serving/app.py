"""A web page to draw digits on and a JSON API, around one model: :func:`create_app` builds the ASGI app.

Requests are parsed on the event loop (bodies are read asynchronously, so a slow
upload stalls nobody, and each body has a deadline); what a request's images would
cost to decode is read from their headers and capped before any is decoded;
decoding and preprocessing run in a small thread pool (small requests in threads of
their own), and inference in a pool of one thread, so torch never runs two forward
passes at once and never fights itself for cores. Nothing a request sends is written to disk and
no request names a file on the server: uploads are parsed in memory, the page's
assets are read from the package when the app is made.

The parts: :mod:`~rnnmnist.serving.guard` (around every request), :mod:`~rnnmnist.serving.requests`
(request bodies), :mod:`~rnnmnist.serving.predictor` (the model and its pools),
:mod:`~rnnmnist.serving.routes` (the endpoints) and :mod:`~rnnmnist.serving.openapi` (the API's document).
Needs the ``serve`` extra (FastAPI, uvicorn, python-multipart).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from rnnmnist import __version__
from rnnmnist.images.decode import MAX_PIXELS
from rnnmnist.serving.guard import Guard, Log, Reading
from rnnmnist.serving.limits import BODY_TIMEOUT, MAX_BATCH, MAX_BODY, MAX_REQUEST_PIXELS
from rnnmnist.serving.openapi import App
from rnnmnist.serving.predictor import Predictor
from rnnmnist.serving.routes import ERROR_HANDLERS, Served, add_page, router
from rnnmnist.training.model import sequence_shape


def _finite(value: Any) -> Any:
    """Metrics as JSON allows them: NaN and infinities become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value if isinstance(value, str | int | float | bool | type(None)) else str(value)


def _details(predictor: Predictor, checkpoint_path: str | Path, limits: dict[str, Any]) -> dict[str, Any]:
    """What /api/model answers: the model served, how, and the request limits."""
    steps, _ = sequence_shape(predictor.checkpoint.config.mode)
    return {
        "rnnmnist_version": __version__,
        "checkpoint": Path(checkpoint_path).name,  # the name only: the server's folders are nobody's business
        "device": str(predictor.device),
        "precision": predictor.precision,
        "steps": steps,
        "trace": predictor.can_trace,
        # how "is it one digit?" is decided (score, threshold, ...); null for a model of another data set
        "digit_check": None if predictor.digit_check is None else _finite(predictor.digit_check.to_dict()),
        "config": _finite(predictor.checkpoint.config.to_dict()),
        "metrics": _finite(predictor.checkpoint.metrics),
        "limits": limits,
    }


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    app.state.served.predictor.close()


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
    predictor = Predictor(checkpoint_path, device, workers, max_request_pixels)
    limits = {
        "max_request_bytes": max_body,
        "max_batch": MAX_BATCH,
        "max_image_pixels": MAX_PIXELS,
        "max_request_pixels": max_request_pixels,
        "body_timeout_s": body_timeout,
    }
    reading = Reading(body_timeout)
    app = App(
        title="rnnmnist",
        version=__version__,
        description="Predict the digit in an image with a recurrent network that reads it row by row.",
        docs_url=None,  # FastAPI's docs page loads Swagger UI from a CDN; /docs is served from the package instead
        redoc_url=None,
        lifespan=_lifespan,
    )
    app.state.served = Served(predictor, _details(predictor, checkpoint_path, limits), log)
    app.state.model, app.state.checkpoint, app.state.stop_reading = predictor.model, predictor.checkpoint, reading.stop
    for kind, handler in ERROR_HANDLERS.items():
        app.add_exception_handler(kind, handler)
    add_page(app)
    app.include_router(router)
    app.add_middleware(Guard, max_body=max_body, allowed_hosts=allowed_hosts, log=log, reading=reading)
    return app
