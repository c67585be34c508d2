"""`rnnmnist serve` says whether an image is one digit: the API's fields (as predict --json's), /api/model's
check, the OpenAPI schema, and the page's words for each reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install 'rnnmnist[serve]'")
pytest.importorskip("httpx", reason="the serve tests need httpx (FastAPI's TestClient)")

from fastapi.testclient import TestClient
from servetools import assert_record, png, save_model

from rnnmnist.images.redraw import draw_shape
from rnnmnist.serving.app import create_app
from rnnmnist.training.digitcheck import FALLBACK, DigitCheck

LOW = DigitCheck(score="energy", threshold=-1e9, keep=0.98, calibrated_on=100)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    path = save_model(tmp_path_factory.mktemp("serve-low") / "checkpoint.pt", digit_check=LOW.to_dict())
    with TestClient(create_app(path, "cpu")) as c:
        yield c


def _two() -> np.ndarray:
    two = np.zeros((60, 100), np.float32)
    two[5:55, 10:22] = 1.0  # two strokes far apart: "11"
    two[5:55, 70:82] = 1.0
    return two


def test_the_api_answers_with_the_decision(client: TestClient) -> None:
    images = {"seven.png": draw_shape("7"), "blank.png": np.zeros((40, 40), np.float32), "two.png": _two()}
    r = client.post("/api/predict/batch", files=[("files", (k, png(v), "image/png")) for k, v in images.items()])
    assert r.status_code == 200, r.text
    seven, blank, two = r.json()["predictions"]
    for record in (seven, blank, two):
        assert_record(record)
    assert seven["is_digit"] is True and seven["digit_score_kind"] == "energy" and seven["digit_threshold"] == -1e9
    assert (blank["is_digit"], blank["reason"], blank["prediction"]) == (False, "no ink", None)
    assert (two["is_digit"], two["reason"], two["class_name"]) == (False, "more than one character", None)
    one = client.post("/api/predict", json={"pixels": [[0] * 28] * 28})  # one image that is not a digit: an answer, 200
    assert one.status_code == 200 and one.json()["reason"] == "no ink"


def test_api_model_and_openapi_describe_the_decision(client: TestClient) -> None:
    assert client.get("/api/model").json()["digit_check"] == LOW.to_dict()
    schema = client.get("/openapi.json").json()["components"]["schemas"]["PredictionOut"]["properties"]
    assert {"is_digit", "reason", "digit_score", "digit_score_kind", "digit_threshold"} <= set(schema)


def test_without_a_stored_check_the_fallback_judges(model: Path, seven: bytes) -> None:
    with TestClient(create_app(model, "cpu")) as c:
        assert c.get("/api/model").json()["digit_check"] == FALLBACK.to_dict()
        r = c.post("/api/predict", content=seven, headers={"content-type": "image/png"}).json()
    assert r["digit_score_kind"] == "msp" and r["digit_threshold"] == 0.8
    assert r["is_digit"] is (r["digit_score"] >= 0.8)


def test_a_model_of_another_data_set_is_not_judged(tmp_path: Path, seven: bytes) -> None:
    path = save_model(tmp_path / "fashion.pt", dataset="fashion-mnist")
    with TestClient(create_app(path, "cpu")) as c:
        assert c.get("/api/model").json()["digit_check"] is None
        r = c.post("/api/predict", content=seven, headers={"content-type": "image/png"}).json()
    assert "is_digit" not in r and isinstance(r["prediction"], int)


def test_the_page_has_words_for_each_reason(client: TestClient) -> None:
    script = client.get("/static/app.js").text
    for reason in ("no ink", "more than one character", "not like any digit"):
        assert f'"{reason}"' in script  # each reason the API gives has the page's own words
    assert "That looks like more than one character. Draw one digit at a time." in script
    assert 'id="verdict"' in client.get("/").text
