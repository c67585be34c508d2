"""`rnnmnist serve`: the JSON API through the ASGI app (every way to send an image, the page, the log line),
and a real server in a subprocess; the request bodies' refusals are in test_serve_requests.py, the guard's
limits in test_serve_guard.py."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from rnnmnist.images.redraw import draw_shape

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install 'rnnmnist[serve]'")
pytest.importorskip("httpx", reason="the serve tests need httpx (FastAPI's TestClient)")

from fastapi.testclient import TestClient
from servetools import ROOT, assert_error, assert_record, free_port, png, rnnmnist, save_model, wait_until_up

from rnnmnist.cli.main import cli
from rnnmnist.serving.app import create_app
from rnnmnist.serving.limits import MAX_BATCH, MAX_BODY
from rnnmnist.serving.routes import STATIC


@pytest.fixture(scope="module")
def log() -> list[str]:
    return []


@pytest.fixture(scope="module")
def client(model: Path, log: list[str]) -> TestClient:
    with TestClient(create_app(model, "cpu", log=log.append)) as c:
        yield c


# --- the API


def test_health_and_model(client: TestClient) -> None:
    assert client.get("/api/health").json() == {"status": "ok"}
    m = client.get("/api/model").json()
    from rnnmnist import __version__

    assert m["rnnmnist_version"] == __version__
    assert m["checkpoint"] == "checkpoint.pt"  # the name only: the server's folders are nobody's business
    assert m["config"]["hidden_size"] == 16 and m["config"]["mode"] == "rows"
    assert m["metrics"] == {"test_accuracy": 0.5, "broken": None}  # NaN is not JSON
    assert m["steps"] == 28 and m["trace"] is True
    assert m["limits"]["max_request_bytes"] == MAX_BODY


def test_predict_gives_predicts_json_record(client: TestClient, model: Path, seven: bytes, tmp_path: Path) -> None:
    (tmp_path / "seven.png").write_bytes(seven)
    cli_record = json.loads(
        CliRunner().invoke(cli, ["predict", str(model), str(tmp_path / "seven.png"), "--json"]).stdout
    )
    r = client.post("/api/predict", files={"file": ("seven.png", seven, "image/png")})
    assert r.status_code == 200, r.text
    assert r.json() == {**cli_record, "input": "seven.png"}


def test_every_way_to_send_an_image_gives_the_same_answer(client: TestClient, seven: bytes) -> None:
    reference = client.post("/api/predict", files={"file": ("x.png", seven)}).json()
    encoded = base64.b64encode(seven).decode()
    answers = [
        client.post("/api/predict", json={"image_base64": encoded}),
        client.post("/api/predict", json={"image_base64": "data:image/png;base64," + encoded, "name": "a/b/c.png"}),
        client.post("/api/predict", content=seven, headers={"content-type": "image/png"}),
    ]
    for a in answers:
        assert a.status_code == 200, a.text
        assert a.json()["probabilities"] == reference["probabilities"]
    assert answers[1].json()["input"] == "c.png"


def test_pixels_in_either_scale(client: TestClient) -> None:
    digit = draw_shape("1").astype(np.float64)
    unit = client.post("/api/predict?show=true", json={"pixels": digit.tolist()})
    byte = client.post("/api/predict", json={"pixels": (digit * 255).round().tolist()})
    assert unit.status_code == byte.status_code == 200, unit.text
    assert unit.json()["probabilities"] == pytest.approx(byte.json()["probabilities"], abs=2e-3)
    image = np.array(unit.json()["image"])
    assert image.shape == (28, 28) and image.min() >= 0 and image.max() == pytest.approx(1, abs=1e-3)


def test_trace_on_request(client: TestClient, seven: bytes) -> None:
    plain = client.post("/api/predict", files={"file": ("x.png", seven)}).json()
    assert "trace" not in plain and "image" not in plain
    r = client.post("/api/predict?trace=true", files={"file": ("x.png", seven)}).json()
    assert_record(r)
    trace = np.array(r["trace"])
    assert trace.shape == (28, 10) and 1 <= r["decided_at"] <= 28
    assert trace[-1] == pytest.approx(np.array(r["probabilities"]), abs=1e-4)


def test_batch(client: TestClient, seven: bytes) -> None:
    files = [
        ("files", ("a.png", seven, "image/png")),
        ("files", ("broken.png", b"\x89PNG not really", "image/png")),
        ("files", ("blank.png", png(np.full((40, 40), 255, np.uint8)), "image/png")),
    ]
    r = client.post("/api/predict/batch?trace=true", files=files)
    assert r.status_code == 200, r.text
    a, broken, blank = r.json()["predictions"]
    assert_record(a) and a["input"] == "a.png" and len(a["trace"]) == 28
    assert broken == {"input": "broken.png", "error": "not an image Pillow can read"}
    assert blank["input"] == "blank.png" and blank["is_digit"] is False and blank["reason"] == "no ink"
    items = [{"image_base64": base64.b64encode(seven).decode()}, {"pixels": [[0]]}, 3]
    r = client.post("/api/predict/batch", json={"images": items})
    assert r.status_code == 200, r.text
    good, bad_pixels, not_object = r.json()["predictions"]
    assert good["input"] == "images[0]" and good["probabilities"] == a["probabilities"]
    assert "28 rows" in bad_pixels["error"] and "object" in not_object["error"]


def test_other_refusals(client: TestClient, seven: bytes) -> None:
    assert_error(
        client.post("/api/predict?trace=maybe", content=seven, headers={"content-type": "image/png"}), 422, "trace"
    )
    assert_error(client.get("/api/predict"), 405)
    assert_error(client.get("/etc/passwd"), 404)
    assert_error(client.get("/static/../serve.py"), 404)
    assert_error(client.post("/api/predict/batch", json={"images": []}), 400, "images")
    assert_error(client.post("/api/predict/batch", json={"images": [{"pixels": 0}] * (MAX_BATCH + 1)}), 400, "at most")
    assert_error(client.post("/api/predict/batch", content=seven, headers={"content-type": "image/png"}), 415)


def test_page_and_docs_ship_everything(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="pad"' in page.text and "/static/app.js" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    for path in STATIC:
        asset = client.get(path)
        assert asset.status_code == 200, path
        text = asset.content.decode()
        assert "http://" not in text.replace("http://www.w3.org/2000/svg", "") and "https://" not in text, path
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/static/docs.js" in docs.text
    spec = client.get("/openapi.json").json()
    assert {"/api/predict", "/api/predict/batch", "/api/health", "/api/model"} <= set(spec["paths"])
    assert "multipart/form-data" in spec["paths"]["/api/predict"]["post"]["requestBody"]["content"]


def test_one_log_line_per_request(client: TestClient, log: list[str]) -> None:
    before = len(log)
    client.get("/api/health")
    client.post("/api/predict?trace=true", json={"image_base64": "aGVsbG8="})  # "hello": not an image
    lines = log[before:]
    assert len(lines) == 2
    assert "GET /api/health 200" in lines[0]
    assert "POST /api/predict?trace=true 422" in lines[1] and lines[1].endswith(" ms")


def test_host_check_and_bidirectional(tmp_path: Path, seven: bytes) -> None:
    app = create_app(save_model(tmp_path / "bi.pt", bidirectional=True), "cpu", allowed_hosts=("127.0.0.1",))
    with TestClient(app, base_url="http://127.0.0.1:8000") as c:
        assert c.get("/api/health").status_code == 200
        assert_error(c.get("/api/health", headers={"host": "evil.example:8000"}), 400, "Host")
        assert c.get("/api/model").json()["trace"] is False
        assert c.post("/api/predict", content=seven, headers={"content-type": "image/png"}).status_code == 200
        r = c.post("/api/predict?trace=true", content=seven, headers={"content-type": "image/png"})
        assert_error(r, 400, "bidirectional")


# --- a real server


def test_real_server(model: Path, seven: bytes, tmp_path: Path) -> None:
    import httpx

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    server = rnnmnist("serve", str(model), "--port", str(port), "--device", "cpu", env={"TMPDIR": str(tmp)})
    try:
        wait_until_up(url, server)
        # A client that sends half its upload and stalls does not hold up anyone else.
        with socket.create_connection(("127.0.0.1", port)) as slow:
            slow.sendall(
                b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                b"Content-Length: 100000\r\n\r\n" + seven[:100]
            )
            started = time.monotonic()
            r = httpx.post(url + "/api/predict?trace=true", files={"file": ("seven.png", seven)}, timeout=10)
            assert time.monotonic() - started < 5
        assert r.status_code == 200, r.text
        assert_record(r.json())
        assert len(r.json()["trace"]) == 28
        assert httpx.get(url + "/api/health", headers={"host": "evil.example"}).status_code == 400
        garbage = httpx.post(
            url + "/api/predict", content=b"garbage", headers={"content-type": "multipart/form-data; boundary=xyz"}
        )
        assert garbage.status_code == 400
    finally:
        server.send_signal(signal.SIGINT)
        _, err = server.communicate(timeout=30)
    text = err.decode()
    assert server.returncode == 130, text
    assert f"at http://127.0.0.1:{port}/" in text
    assert "POST /api/predict?trace=true 200" in text
    assert "stopped (SIGINT)" in text and "Traceback" not in text
    assert "Expected boundary" not in text  # the multipart parser's own log line: the 400's line says it
    assert list(tmp.iterdir()) == []


def test_without_the_extra_one_line(model: Path) -> None:
    code = "import sys; sys.modules['fastapi'] = None; from rnnmnist.cli.main import main; main()"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run(
        [sys.executable, "-c", code, "serve", str(model)], env=env, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        "Error: rnnmnist serve needs the serve extra: pip install 'rnnmnist[serve]'"
    ]


def test_port_in_use_and_exposed_host_warning(model: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        r = subprocess.run(
            [sys.executable, "-m", "rnnmnist", "serve", str(model), "--host", "0.0.0.0", "--port", str(port)],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=60,
        )
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1, r.stderr
    assert lines[0].startswith("Warning: serving on every network interface")
    assert lines[1].startswith(f"Error: cannot listen on 0.0.0.0:{port}") and len(lines) == 2


def test_a_run_folder_stands_for_its_checkpoint_as_in_predict(model: Path, tmp_path: Path) -> None:
    with socket.socket() as taken:  # a port in use: serve gets past its arguments and stops with one line
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        folder = subprocess.run(
            [sys.executable, "-m", "rnnmnist", "serve", str(model.parent), "--port", str(port)],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert folder.returncode == 1, folder.stderr
    assert folder.stderr.strip().startswith(f"Error: cannot listen on 127.0.0.1:{port}"), folder.stderr
    empty = subprocess.run(
        [sys.executable, "-m", "rnnmnist", "serve", str(tmp_path)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert empty.returncode == 2 and "checkpoint.pt" in empty.stderr, empty.stderr


def test_a_model_whose_outputs_overflow_answers_500_naming_why(tmp_path: Path, seven: bytes) -> None:
    """Blank images (the warm-up's) compute finite outputs; ink drives every gate open and the head's
    3e38 weights past float32's range. The client gets the reason, the log gets it too."""
    from rnnmnist.config import Config
    from rnnmnist.training import checkpoint
    from rnnmnist.training.model import SequenceClassifier

    cfg = Config(hidden_size=16, precision="fp32")
    model = SequenceClassifier(cfg)
    with torch.no_grad():
        for name, weights in model.rnn.named_parameters():
            weights.fill_(50.0 if name.startswith("weight_ih") else 0.0)
        model.head.weight.fill_(3e38)
        model.head.bias.zero_()
    path = tmp_path / "overflow.pt"
    checkpoint.save(path, cfg, model, {})
    log: list[str] = []
    with TestClient(create_app(path, "cpu", log=log.append)) as c:
        assert_error(c.post("/api/predict", files={"file": ("seven.png", seven)}), 500, "not finite numbers")
    assert any("not finite numbers" in line for line in log), log
