"""The API's OpenAPI document (``/openapi.json``, read by the ``/docs`` page): the answers' shapes, and the
request bodies as generated from the models that parse them (:mod:`rnnmnist.serving.requests`).

The endpoints build their answers by hand (``predict --json``'s records), so the answer models here only
describe them.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field, TypeAdapter
from pydantic.json_schema import models_json_schema

from rnnmnist.serving.requests import BatchIn, FileUpload, FileUploads, ImageIn

# --- answers (documentation only)


class PredictionOut(BaseModel):
    input: str = Field(description="the uploaded file's name, the JSON item's name, or 'image'")
    prediction: int | None = Field(description="the digit, 0-9; null when the image is not one digit")
    class_name: str | None = Field(description="the class's name (for digits, the digit); null when not a digit")
    confidence: float = Field(description="the network's largest probability (also when not a digit)")
    probabilities: list[float] = Field(description="10 numbers, digits 0-9: what the network said, digit or not")
    top3: list[tuple[int, float]]
    is_digit: bool | None = Field(
        None, description="is the image one digit? Absent for a model of another data set (no decision)"
    )
    reason: str | None = Field(
        None, description="why it is not one digit: 'no ink', 'more than one character' or 'not like any digit'"
    )
    digit_score: float | None = Field(None, description="the score compared with digit_threshold (higher: digit)")
    digit_score_kind: str | None = Field(
        None, description="'energy' (logsumexp of the logits, calibrated) or 'msp' (the largest probability)"
    )
    digit_threshold: float | None = Field(None, description="a digit_score below it is 'not like any digit'")
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


ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorOut} for code in (400, 413, 415, 422)}

# --- request bodies, generated from the models that parse them

REQUEST_MODELS: list[type[BaseModel]] = [ImageIn, BatchIn, FileUpload, FileUploads]
REF = "#/components/schemas/{model}"
_, _definitions = models_json_schema([(m, "validation") for m in REQUEST_MODELS], ref_template=REF)
REQUEST_SCHEMAS: dict[str, Any] = _definitions["$defs"]
_IMAGE_ITSELF = {"schema": TypeAdapter(bytes).json_schema()}  # the body is the image file


def _ref(model: type[BaseModel]) -> dict[str, Any]:
    return {"schema": {"$ref": REF.format(model=model.__name__)}}


def _request_body(content: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": content}}


PREDICT_BODY = _request_body(
    {
        "multipart/form-data": _ref(FileUpload),
        "application/json": _ref(ImageIn),
        "image/png": _IMAGE_ITSELF,
        "image/jpeg": _IMAGE_ITSELF,
    }
)
BATCH_BODY = _request_body({"multipart/form-data": _ref(FileUploads), "application/json": _ref(BatchIn)})


class App(FastAPI):
    """FastAPI, with the request bodies' schemas among the OpenAPI document's components.

    The endpoints read their bodies themselves (multipart, JSON or the image itself, by content type), so
    FastAPI does not see the models; their schemas are added here, where the operations refer to them.
    """

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            document = super().openapi()  # built once, and kept in self.openapi_schema
            document.setdefault("components", {}).setdefault("schemas", {}).update(REQUEST_SCHEMAS)
        return self.openapi_schema  # type: ignore[return-value]
