"""The endpoints of `rnnmnist serve`: the page and its assets, health, the model's details and the two predict
endpoints; and the handlers that answer every refusal as ``{"error": ...}``.

What the endpoints share lives in one object, :class:`Served`, at ``app.state.served``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from rnnmnist.errors import CheckpointError
from rnnmnist.serving.guard import Log
from rnnmnist.serving.limits import MAX_BATCH
from rnnmnist.serving.openapi import BATCH_BODY, ERRORS, PREDICT_BODY, BatchOut, PredictionOut
from rnnmnist.serving.predictor import Predictor
from rnnmnist.serving.refusals import ApiError, BodyCut, error_response
from rnnmnist.serving.requests import read_items

STATIC = {  # URL path -> (package file, media type); read once, when the app is made
    "/": ("index.html", "text/html; charset=utf-8"),
    "/docs": ("docs.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/docs.js": ("docs.js", "text/javascript; charset=utf-8"),
    "/static/style.css": ("style.css", "text/css; charset=utf-8"),
    "/favicon.svg": ("favicon.svg", "image/svg+xml"),
}


@dataclass(frozen=True)
class Served:
    """What the endpoints share: the predictor, the model's details for /api/model, and where lines go."""

    predictor: Predictor
    details: dict[str, Any]
    log: Log | None


def served(request: Request) -> Served:
    return request.app.state.served  # type: ignore[no-any-return]


# --- the page: files of the package, read when the app is made (no request names a file on the server)


def _asset(body: bytes, media: str) -> Callable[[], Awaitable[Response]]:
    async def serve_asset() -> Response:
        return Response(body, media_type=media)

    return serve_asset


def add_page(app: FastAPI) -> None:
    """The drawing page, the API docs page and their assets, at the paths of :data:`STATIC`."""
    folder = resources.files("rnnmnist") / "static"
    for path, (name, media) in STATIC.items():
        endpoint = _asset((folder / name).read_bytes(), media)
        app.add_api_route(path, endpoint, methods=["GET", "HEAD"], include_in_schema=False)


# --- the API

router = APIRouter()


@router.get("/api/health", summary="Is the server up?")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/api/model", summary="The model served: config, metrics, rnnmnist version, limits")
async def model_details(request: Request) -> dict[str, Any]:
    return served(request).details


async def _predictions(request: Request, batch: bool, trace: bool, show: bool) -> list[dict[str, Any]]:
    predictor = served(request).predictor
    if trace and not predictor.can_trace:
        raise ApiError(400, "a reading trace needs a one-directional model; this one is bidirectional")
    return await predictor.predict(await read_items(request, batch), trace, show)


@router.post(
    "/api/predict",
    summary="Predict the digit in one image",
    description=(
        "Send an image file (multipart field `file`), the image itself as the body (image/png, ...), or JSON "
        '`{"image_base64": ...}` or `{"pixels": [[28 numbers] x 28]}`. The image is made MNIST-like exactly '
        "as `rnnmnist predict` does. The answer is `predict --json`'s record."
    ),
    response_model=None,
    responses={200: {"model": PredictionOut}, **ERRORS},
    openapi_extra=PREDICT_BODY,
)
async def predict(
    request: Request,
    trace: bool = Query(False, description="add the reading trace and decided_at"),
    show: bool = Query(False, description="add the 28x28 image the network saw"),
) -> JSONResponse:
    (record,) = await _predictions(request, False, trace, show)
    return JSONResponse(record, status_code=422 if "error" in record else 200)


@router.post(
    "/api/predict/batch",
    summary=f"Predict many images (at most {MAX_BATCH})",
    description=(
        "Multipart with one file field per image (e.g. `files`), or JSON "
        '`{"images": [{"image_base64": ...} or {"pixels": ...}, ...]}`. An image that cannot be used gets '
        '`{"input", "error"}` in its place and the others are still predicted.'
    ),
    response_model=None,
    responses={200: {"model": BatchOut}, **ERRORS},
    openapi_extra=BATCH_BODY,
)
async def predict_batch(
    request: Request,
    trace: bool = Query(False, description="add each image's reading trace and decided_at"),
    show: bool = Query(False, description="add each 28x28 image the network saw"),
) -> dict[str, Any]:
    return {"predictions": await _predictions(request, True, trace, show)}


# --- refusals, each answered as {"error": ...}


async def _api_error(request: Request, e: ApiError) -> JSONResponse:
    return error_response(e.status, e.message)


async def _cut(request: Request, e: BodyCut) -> JSONResponse:
    response = error_response(e.status, e.message)
    response.headers["connection"] = "close"  # the rest of the body is still on its way: do not read it
    return response


async def _gone(request: Request, e: ClientDisconnect) -> JSONResponse:
    return error_response(400, "the client went away before sending the whole request")  # to nobody: for the log


async def _http_error(request: Request, e: HTTPException) -> JSONResponse:
    return error_response(e.status_code, e.detail)


async def _invalid(request: Request, e: RequestValidationError) -> JSONResponse:
    problems = [f"{'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg', 'invalid')}" for err in e.errors()]
    return error_response(422, "; ".join(problems) or "invalid request")


async def _unexpected(request: Request, e: Exception) -> JSONResponse:
    # The last resort of a server: the client gets JSON without internals, the log gets the cause.
    log = served(request).log
    if log is not None:
        log(f"internal error on {request.method} {request.url.path}: {type(e).__name__}: {e}")
    return error_response(500, f"internal error ({type(e).__name__}); see the server's log")


async def _model_error(request: Request, e: CheckpointError) -> JSONResponse:
    # The served model cannot answer this input (its outputs overflow): the server's fault, said plainly.
    log = served(request).log
    if log is not None:
        log(f"model error on {request.method} {request.url.path}: {e}")
    return error_response(500, str(e))


ERROR_HANDLERS: dict[type[Exception], Callable[[Request, Any], Awaitable[JSONResponse]]] = {
    ApiError: _api_error,  # BodyTooLarge too
    BodyCut: _cut,
    CheckpointError: _model_error,
    ClientDisconnect: _gone,
    HTTPException: _http_error,
    RequestValidationError: _invalid,
    Exception: _unexpected,
}
