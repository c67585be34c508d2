"""Request bodies of the predict endpoints: their shapes, declared once as pydantic models, and how a request
becomes the images it sends.

The JSON bodies are validated by the models :class:`ImageIn` and :class:`BatchIn`, and the same models
generate their OpenAPI schemas. Each refusal keeps its own message: a validator raises ``ValueError`` with
the text the client reads. In a batch, an image that cannot be used fails alone (:class:`Refused` in its
place), as a bad file does in `rnnmnist predict`. Multipart bodies are read by Starlette's parser, in memory,
and take a file under any field name; :class:`FileUpload` and :class:`FileUploads` describe them by the
conventional names.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import Request
from pydantic import (
    BaseModel,
    Field,
    PlainValidator,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    model_validator,
)
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from rnnmnist.serving.limits import MAX_BATCH, MAX_BODY, MAX_NAME
from rnnmnist.serving.refusals import ApiError

PIXELS_SIDE = 28
Source = bytes | np.ndarray | str  # encoded image, grayscale pixels (H, W) in [0, 1], or why the item is unusable


def _name(value: Any) -> str | None:
    """A client's name for an image, printable and without folders (they say nothing to us); None if unusable."""
    if not isinstance(value, str) or not value.strip():
        return None
    clean = "".join(c for c in value if c.isprintable())
    return Path(clean.replace("\\", "/")).name[:MAX_NAME] or None


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


# Each field's validator is the whole of its validation (the messages are the API's); the schema is what a
# client sends, the value what the server keeps.
Base64Image = Annotated[bytes | None, PlainValidator(_base64_image, json_schema_input_type=str)]
Pixels = Annotated[np.ndarray | None, PlainValidator(_pixels, json_schema_input_type=list[list[float]])]
Name = Annotated[str | None, PlainValidator(_name, json_schema_input_type=str)]


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


class ImageIn(BaseModel):
    """One image: an encoded image in base64, or 28x28 numbers; and a name for it."""

    # Optional, but never null: the schema says so (no "default": null beside a type that holds no null).
    image_base64: Base64Image = Field(
        None, description="an encoded image (PNG, JPEG, ...), base64 or a data URL", json_schema_extra=_no_default
    )
    pixels: Pixels = Field(
        None, description="28 rows of 28 numbers in [0, 1] (or 0-255), any polarity", json_schema_extra=_no_default
    )
    name: Name = Field(None, description="echoed back as 'input'", json_schema_extra=_no_default)

    @model_validator(mode="before")
    @classmethod
    def _one_image(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise ValueError('an image must be an object with "image_base64" or "pixels"')
        if sum(key in data for key in ("image_base64", "pixels")) != 1:
            raise ValueError('give one of "image_base64" (an encoded image) or "pixels" (28x28 numbers)')
        return data

    def source(self) -> Source:
        """The image as sent: its pixels, or its encoded bytes."""
        # _one_image let exactly one of the two through, so image_base64 is set when pixels is not.
        return self.pixels if self.pixels is not None else self.image_base64  # type: ignore[return-value]


@dataclass(frozen=True)
class Refused:
    """An image of a batch that cannot be used, and why: it fails alone."""

    reason: str


def _reason(error: ValidationError) -> str:
    """The message of a validation error: the text of the ``ValueError`` a validator raised."""
    first = error.errors()[0]
    cause = first.get("ctx", {}).get("error")
    return str(cause) if cause is not None else first["msg"]


def _fail_alone(value: Any, handler: ValidatorFunctionWrapHandler) -> ImageIn | Refused:
    try:
        return handler(value)
    except ValidationError as e:
        return Refused(_reason(e))


class BatchIn(BaseModel):
    """Many images; one that cannot be used gets an error record in its place."""

    # Items hold ImageIn, or Refused for one that failed alone; the schema is ImageIn's.
    images: list[Annotated[ImageIn, WrapValidator(_fail_alone)]] = Field(
        description=f"the images, in order (at most {MAX_BATCH})"
    )

    @model_validator(mode="before")
    @classmethod
    def _some_images(cls, data: Any) -> Any:
        images = data.get("images") if isinstance(data, dict) else None
        if not isinstance(images, list) or not images:
            raise ValueError('a batch is {"images": [ {"image_base64": ...} or {"pixels": ...}, ... ]}')
        return {"images": images[: MAX_BATCH + 1]}  # one over the limit is enough to refuse it: read no more


class FileUpload(BaseModel):
    """One image as a multipart file field (any field name is read; `file` by convention)."""

    file: bytes = Field(description="the image file (PNG, JPEG, ...)")


class FileUploads(BaseModel):
    """Many images as multipart file fields (any field names are read; `files` by convention)."""

    files: list[bytes] = Field(description=f"the image files, in order (at most {MAX_BATCH})")


class _InMemoryMultiPart(MultiPartParser):
    # Starlette spools uploads over 1 MB to a temporary file; keep every upload (at most MAX_BODY) in memory.
    spool_max_size = MAX_BODY + 1


async def _from_multipart(request: Request, body: bytes, batch: bool) -> list[tuple[str, Source]]:
    async def stream() -> Any:
        yield body

    try:
        form = await _InMemoryMultiPart(request.headers, stream(), max_files=MAX_BATCH, max_fields=MAX_BATCH).parse()
    except MultiPartException as e:
        raise ApiError(400, f"bad multipart body: {e.message}") from None
    files: list[tuple[str, Source]] = []
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            files.append((_name(value.filename) or key, await value.read()))
    await form.close()
    if not files:
        raise ApiError(400, "the multipart body holds no file (send the image as a file field, e.g. 'file')")
    if not batch and len(files) > 1:
        raise ApiError(400, "send one file to /api/predict; several go to /api/predict/batch")
    return files


def _from_json(body: bytes, batch: bool) -> list[tuple[str, Source]]:
    try:
        payload = json.loads(body)  # not pydantic's parser: NaN and Infinity are read, then refused as not finite
    except (ValueError, RecursionError):
        raise ApiError(400, "the body is not valid JSON") from None
    try:
        if not batch:
            image = ImageIn.model_validate(payload)
            return [(image.name or "image", image.source())]
        images = BatchIn.model_validate(payload).images
    except ValidationError as e:
        raise ApiError(400, _reason(e)) from None
    return [
        (f"images[{i}]", item.reason) if isinstance(item, Refused) else (item.name or f"images[{i}]", item.source())
        for i, item in enumerate(images)
    ]


async def read_items(request: Request, batch: bool) -> list[tuple[str, Source]]:
    """The images a request sends, named, by its content type; a malformed request raises :class:`ApiError`."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await request.body()
    if kind == "multipart/form-data":
        items = await _from_multipart(request, body, batch)
    elif kind == "application/json":
        items = _from_json(body, batch)
    elif (kind.startswith("image/") or kind == "application/octet-stream") and not batch:
        items = [("image", body)]
    else:
        raise ApiError(
            415,
            f"unsupported content type {kind or '(none)'!r}: send multipart/form-data, application/json"
            + ("" if batch else ", or the image itself (image/png, image/jpeg, ...)"),
        )
    if len(items) > MAX_BATCH:
        raise ApiError(400, f"a batch holds at most {MAX_BATCH} images")
    return items
