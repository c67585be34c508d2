"""`rnnmnist serve`'s request bodies (rnnmnist.serving.requests): every malformed body is a 4xx with JSON
saying why, numbers that do not convert, a bad image in a batch failing alone, wrapped base64, uploads kept
in memory, and the OpenAPI schemas generated from the models that parse the bodies."""

from __future__ import annotations

import base64
import json
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rnnmnist.images.redraw import draw_shape

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install 'rnnmnist[serve]'")
pytest.importorskip("httpx", reason="the serve tests need httpx (FastAPI's TestClient)")

from fastapi.testclient import TestClient
from servetools import assert_error, assert_record, png

from rnnmnist.serving.app import create_app
from rnnmnist.serving.openapi import REF
from rnnmnist.serving.requests import BatchIn, FileUpload, FileUploads, ImageIn


@pytest.fixture(scope="module")
def client(model: Path) -> TestClient:
    with TestClient(create_app(model, "cpu")) as c:
        yield c


# --- malformed bodies


def bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = lambda kind, data: (  # noqa: E731
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    )
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b"")


BAD_REQUESTS = [  # (description, request kwargs, status, words in the error)
    ("no content type", {"content": b"hello"}, 415, ["content type"]),
    ("text", {"content": b"hello", "headers": {"content-type": "text/plain"}}, 415, ["text/plain"]),
    ("bad json", {"content": b"{nope", "headers": {"content-type": "application/json"}}, 400, ["JSON"]),
    ("deep json", {"content": b"[" * 100_000, "headers": {"content-type": "application/json"}}, 400, ["JSON"]),
    ("json, no image", {"json": {"picture": 1}}, 400, ["image_base64"]),
    ("json, both", {"json": {"pixels": [], "image_base64": ""}}, 400, ["one of"]),
    ("json list", {"json": [1, 2]}, 400, ["object"]),
    ("pixels 27", {"json": {"pixels": [[0] * 28] * 27}}, 400, ["28 rows"]),
    ("pixels ragged", {"json": {"pixels": [[0] * 28] * 27 + [[0] * 3]}}, 400, ["28"]),
    ("pixels strings", {"json": {"pixels": [["a"] * 28] * 28}}, 400, ["numbers"]),
    ("pixels bools", {"json": {"pixels": [[True] * 28] * 28}}, 400, ["numbers"]),
    ("pixels big", {"json": {"pixels": [[300] * 28] * 28}}, 400, ["0-255"]),
    ("pixels negative", {"json": {"pixels": [[-1] * 28] * 28}}, 400, ["0-255"]),
    (
        "pixels NaN",
        {
            "content": b'{"pixels": [' + b",".join([b"[" + b",".join([b"NaN"] * 28) + b"]"] * 28) + b"]}",
            "headers": {"content-type": "application/json"},
        },
        400,
        ["finite"],
    ),
    ("bad base64", {"json": {"image_base64": "!!!"}}, 400, ["base64"]),
    ("base64 not str", {"json": {"image_base64": 12}}, 400, ["string"]),
    ("base64 not image", {"json": {"image_base64": base64.b64encode(b"hello").decode()}}, 422, ["not an image"]),
    ("bomb", {"content": bomb_png(10_000, 10_000), "headers": {"content-type": "image/png"}}, 422, ["limit"]),
    ("empty image body", {"content": b"", "headers": {"content-type": "image/png"}}, 422, ["not an image"]),
    ("multipart no file", {"data": {"a": "b"}, "files": {}}, 415, []),  # httpx sends a form, not multipart
    (
        "multipart, field only",
        {
            "content": b'--x\r\nContent-Disposition: form-data; name="a"\r\n\r\nb\r\n--x--\r\n',
            "headers": {"content-type": "multipart/form-data; boundary=x"},
        },
        400,
        ["no file"],
    ),
    (
        "multipart garbage",
        {"content": b"garbage", "headers": {"content-type": "multipart/form-data"}},
        400,
        ["multipart"],
    ),
    ("two files", {"files": [("file", ("a.png", b"1")), ("file", ("b.png", b"2"))]}, 400, ["batch"]),
]


@pytest.mark.parametrize("what, kwargs, status, words", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_requests_get_4xx_json(client: TestClient, what: str, kwargs: dict, status: int, words: list) -> None:
    assert_error(client.post("/api/predict", **kwargs), status, *words)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.binary(max_size=300) | st.text(max_size=200).map(str.encode),
    kind=st.sampled_from(["application/json", "image/png", "multipart/form-data; boundary=b", "text/plain", ""]),
    path=st.sampled_from(["/api/predict", "/api/predict/batch"]),
)
def test_arbitrary_bodies_never_fail_the_server(client: TestClient, body: bytes, kind: str, path: str) -> None:
    r = client.post(path, content=body, headers={"content-type": kind} if kind else {})
    assert r.status_code < 500, r.text  # the TestClient re-raises any exception inside the app, too
    if r.status_code >= 400:
        assert "error" in r.json()


def test_uploads_never_touch_the_disk(client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where a spooled upload would go
    noise = np.random.default_rng(0).integers(0, 256, (1200, 1200), dtype=np.uint8)  # ~1.4 MB, incompressible
    data = png(noise)
    assert len(data) > 1024 * 1024  # over starlette's 1 MB spooling threshold
    r = client.post("/api/predict", files={"file": ("noise.png", data, "image/png")})
    assert r.status_code in (200, 422)
    assert list(tmp_path.iterdir()) == []


# --- numbers that do not convert


NOT_PIXELS = [  # (description, the "pixels" value, words in the error)
    ("int too large for a float", [[10**400] * 28] * 28, ["finite"]),
    ("one huge int", [[0] * 27 + [-(10**309)]] + [[0] * 28] * 27, ["finite"]),
    ("bools", [[True] * 28] * 28, ["numbers"]),
    ("strings", [["1"] * 28] * 28, ["numbers"]),
    ("nulls", [[None] * 28] * 28, ["numbers"]),
    ("one level too deep", [[[0] * 28] * 28] * 28, ["numbers"]),
    ("one level too shallow", [0] * 28, ["28 rows"]),
    ("an object", {"a": 1}, ["28 rows"]),
]


@pytest.mark.parametrize("what, pixels, words", NOT_PIXELS, ids=[n[0] for n in NOT_PIXELS])
def test_pixels_that_do_not_convert_are_a_400(client: TestClient, what: str, pixels: object, words: list) -> None:
    assert_error(client.post("/api/predict", json={"pixels": pixels}), 400, *words)


def test_a_bad_item_fails_alone_in_a_batch(client: TestClient, seven: bytes) -> None:
    images = [
        {"image_base64": base64.b64encode(seven).decode()},
        {"pixels": [[10**400] * 28] * 28},
        {"pixels": [[1e400] * 28] * 28},  # json.dumps writes Infinity, which Python's json reads
        {"pixels": draw_shape("1").tolist()},
    ]
    body = json.dumps({"images": images}).encode()
    r = client.post("/api/predict/batch", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    good, huge, infinite, one = r.json()["predictions"]
    assert_record(good) and assert_record(one)
    assert "finite" in huge["error"] and "finite" in infinite["error"]


JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**300, max_value=10**500)
    | st.floats()
    | st.text(max_size=3)
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    cell=JSON_SCALARS | st.lists(JSON_SCALARS, max_size=2) | st.dictionaries(st.text(max_size=2), JSON_SCALARS),
    where=st.tuples(st.integers(0, 27), st.integers(0, 27)),
)
def test_any_json_value_among_pixels_is_a_4xx_and_fails_alone(client: TestClient, cell: object, where: tuple) -> None:
    pixels = draw_shape("1").tolist()
    pixels[where[0]][where[1]] = cell
    body = json.dumps({"images": [{"pixels": pixels}, {"pixels": draw_shape("7").tolist()}]}).encode()
    r = client.post("/api/predict/batch", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text  # the TestClient re-raises any exception inside the app, too
    odd, seven = r.json()["predictions"]
    assert_record(seven)
    if "error" in odd:  # refused ("pixels must be ..."), or read but unusable (a value over 1 reads as 0-255)
        assert odd["error"].startswith(("pixels", "no ink")) and "\n" not in odd["error"], odd


# --- wrapped base64


def test_wrapped_base64_is_accepted(client: TestClient, seven: bytes) -> None:
    reference = client.post("/api/predict", content=seven, headers={"content-type": "image/png"}).json()
    plain = base64.b64encode(seven).decode()
    wrapped = [
        base64.encodebytes(seven).decode(),  # Python's: 76 columns, a newline after each line
        "\r\n".join(plain[i : i + 76] for i in range(0, len(plain), 76)) + "\r\n",  # coreutils base64 on Windows
        "data:image/png;base64," + " \n".join(plain[i : i + 64] for i in range(0, len(plain), 64)),
    ]
    for value in wrapped:
        r = client.post("/api/predict", json={"image_base64": value})
        assert r.status_code == 200, r.text
        assert r.json()["probabilities"] == reference["probabilities"]


@pytest.mark.parametrize("value", ["!!!", "QUJD\nx", "QUJD-_", "QUJ", "\n\n", "QU\x00JD"])
def test_base64_is_still_strictly_validated(client: TestClient, value: str) -> None:
    assert_error(client.post("/api/predict", json={"image_base64": value}), 400, "base64")


# --- the OpenAPI schemas are the models' own


REQUEST_BODIES = [  # (path, media type, the model that parses or describes that body)
    ("/api/predict", "application/json", ImageIn),
    ("/api/predict", "multipart/form-data", FileUpload),
    ("/api/predict/batch", "application/json", BatchIn),
    ("/api/predict/batch", "multipart/form-data", FileUploads),
]


def test_request_body_schemas_are_generated_from_the_models(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    components = spec["components"]["schemas"]
    for path, media, model in REQUEST_BODIES:
        body = spec["paths"][path]["post"]["requestBody"]
        assert body["required"] is True
        ref = body["content"][media]["schema"]["$ref"]
        assert ref == REF.format(model=model.__name__), (path, media)
        generated = model.model_json_schema(ref_template=REF)
        nested = generated.pop("$defs", {})
        assert components[model.__name__] == generated, (path, media)
        for name, schema in nested.items():  # BatchIn's items are ImageIn, by reference
            assert components[name] == schema
    assert set(components["ImageIn"]["properties"]) == {"image_base64", "pixels", "name"}
    content = spec["paths"]["/api/predict"]["post"]["requestBody"]["content"]
    assert set(content) == {"multipart/form-data", "application/json", "image/png", "image/jpeg"}
    assert content["image/png"]["schema"] == {"type": "string", "format": "binary"}


def test_request_schemas_hold_no_null_default_their_types_refuse() -> None:
    """A strict OpenAPI reader (or a client generator) takes a field's default to be a valid value."""
    for model in (ImageIn, BatchIn, FileUpload, FileUploads):
        schema = model.model_json_schema()
        for definition in [schema, *schema.get("$defs", {}).values()]:
            for name, field in definition.get("properties", {}).items():
                assert field.get("default", "absent") is not None, f"{model.__name__}.{name}: default null"
            assert "``" not in definition.get("description", ""), model.__name__  # Markdown, not reST
