"""`rnnmnist serve`'s guard (rnnmnist.serving.guard) under a hostile-but-fair client: strict Host parsing,
the body's size limit, decode budgets, stalled uploads, connections over the limit, malformed HTTP, and a
clean stop while an upload is stalled."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import signal
import socket
import struct
import time
import zlib
from pathlib import Path

import pytest
from click.testing import CliRunner

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install 'rnnmnist[serve]'")
pytest.importorskip("httpx", reason="the serve tests need httpx (FastAPI's TestClient)")

from fastapi.testclient import TestClient
from servetools import assert_error, assert_record, free_port, rnnmnist, wait_until_up

from rnnmnist.cli.main import cli
from rnnmnist.images.decode import MAX_PIXELS
from rnnmnist.serving import limits as serve_limits
from rnnmnist.serving.app import create_app


@pytest.fixture(scope="module")
def client(model: Path) -> TestClient:
    with TestClient(create_app(model, "cpu")) as c:
        yield c


def one_bit_png(width: int, height: int) -> bytes:
    """A real, fully decodable 1-bit PNG of width x height white pixels: a few KB for tens of megapixels."""
    row = b"\0" + b"\xff" * ((width + 7) // 8)  # filter byte, then the row's bits
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    idat = zlib.compress(row * height, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


# --- Host headers


@pytest.mark.parametrize(
    "host, ok",
    [
        ("127.0.0.1", True),
        ("127.0.0.1:8000", True),
        ("LOCALHOST:8000", True),
        ("[::1]", True),
        ("[::1]:8000", True),
        ("127.0.0.1:evil", False),
        ("127.0.0.1:80:80", False),
        ("127.0.0.1:８０", False),  # digits, but not ASCII ones
        ("[::1]evil.com", False),
        ("[::1]:evil", False),
        ("[::1", False),
        ("::1", False),  # an IPv6 address in a Host header is bracketed
        ("127.0.0.1.evil.com", False),
        ("", False),
    ],
)
def test_host_header_is_parsed_strictly(model: Path, host: str, ok: bool) -> None:
    with TestClient(create_app(model, "cpu", allowed_hosts=("127.0.0.1", "localhost", "::1"))) as c:
        r = c.get("/api/health", headers={"host": host.encode()})
    if ok:
        assert r.status_code == 200, r.text
    else:
        assert_error(r, 400, "Host")


def test_empty_host_is_refused_up_front(model: Path) -> None:
    r = CliRunner().invoke(cli, ["serve", str(model), "--host", "", "--port", "0"])
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and "--host" in lines[0] and "Warning" not in r.output, r.output


# --- the body's size limit


def test_request_size_limit(client: TestClient) -> None:
    big = b"\0" * (serve_limits.MAX_BODY + 1)
    assert_error(client.post("/api/predict", content=big, headers={"content-type": "image/png"}), 413, "10 MB")

    def chunks():  # no Content-Length: the limit counts what arrives
        for _ in range(11):
            yield b"\0" * (1024 * 1024)

    assert_error(client.post("/api/predict", content=chunks(), headers={"content-type": "image/png"}), 413)


# --- the decode budget


def test_help_states_the_limits() -> None:
    text = " ".join(CliRunner().invoke(cli, ["serve", "--help"]).output.split())
    assert f"{serve_limits.MAX_BODY // 2**20} MB" in text and f"within {serve_limits.BODY_TIMEOUT:g} s" in text
    assert f"{serve_limits.MAX_REQUEST_PIXELS / 1e6:g} MP in all" in text and f"{MAX_PIXELS / 1e6:g} MP each" in text


def test_a_batch_over_the_pixel_budget_is_refused_before_decoding(client: TestClient) -> None:
    bomb = one_bit_png(7000, 7000)  # 49 MP: under the per-image limit, 6 KB
    assert 7000 * 7000 <= MAX_PIXELS < 2 * 7000 * 7000 and serve_limits.MAX_REQUEST_PIXELS < 2 * 7000 * 7000
    files = [("files", (f"{i}.png", bomb, "image/png")) for i in range(64)]
    started = time.perf_counter()
    r = client.post("/api/predict/batch", files=files)
    assert time.perf_counter() - started < 3  # decoding them would take ~0.5 s each, and 35 GB
    assert_error(r, 413, "MP")
    images = [{"image_base64": base64.b64encode(bomb).decode()}] * 2
    assert_error(client.post("/api/predict/batch", json={"images": images}), 413, "MP")


def test_a_batch_within_the_budget_is_predicted(client: TestClient, seven: bytes) -> None:
    big = one_bit_png(3000, 3000)  # 9 MP, blank: decoded, then not a digit: "no ink"
    files = [("files", ("a.png", seven, "image/png")), ("files", ("big.png", big, "image/png"))]
    r = client.post("/api/predict/batch", files=files)
    assert r.status_code == 200, r.text
    a, blank = r.json()["predictions"]
    assert_record(a)
    assert blank["is_digit"] is False and blank["reason"] == "no ink"
    limits = client.get("/api/model").json()["limits"]
    assert limits["max_request_pixels"] == serve_limits.MAX_REQUEST_PIXELS and limits["max_image_pixels"] == MAX_PIXELS


def test_a_small_request_does_not_wait_behind_large_images(model: Path, seven: bytes) -> None:
    import httpx

    app = create_app(model, "cpu", workers=1)
    big = one_bit_png(5000, 5000)  # 25 MP (over LIGHT_PIXELS): about a quarter of a second each to decode, alone

    async def race() -> list[str]:
        done: list[str] = []
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=120) as http:

            async def post(name: str, data: bytes, after: float) -> None:
                await asyncio.sleep(after)
                r = await http.post("/api/predict", content=data, headers={"content-type": "image/png"})
                assert r.status_code in (200, 422), r.text
                done.append(name)

            await asyncio.gather(*(post(f"big{i}", big, 0) for i in range(3)), post("small", seven, 0.05))
        return done

    done = asyncio.run(race())
    assert done.index("small") < 2, done  # not queued behind all three


# --- stalled uploads, through the ASGI interface (a real server is below)


def _scope(length: int) -> dict:
    headers = [(b"host", b"127.0.0.1"), (b"content-type", b"image/png"), (b"content-length", str(length).encode())]
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/predict",
        "raw_path": b"/api/predict",
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }


async def _stalled_upload(app, stop_after: float | None = None) -> tuple[int, dict, bytes, float]:
    """POST one byte of a 1,000-byte body, then a byte every 3 s; the answer and how long it took."""
    sent, answer = 0, {}

    async def receive() -> dict:
        nonlocal sent
        if sent:
            await asyncio.sleep(3)
        sent += 1
        return {"type": "http.request", "body": b"\x89", "more_body": True}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            answer["status"], answer["headers"] = message["status"], dict(message["headers"])
        elif message["type"] == "http.response.body":
            answer["body"] = answer.get("body", b"") + message.get("body", b"")

    async def stop() -> None:
        await asyncio.sleep(stop_after)
        app.state.stop_reading()

    started = time.perf_counter()
    stopper = asyncio.ensure_future(stop()) if stop_after is not None else None
    await asyncio.wait_for(app(_scope(1000), receive, send), 20)
    if stopper is not None:
        await stopper
    return answer["status"], answer["headers"], answer["body"], time.perf_counter() - started


def test_a_stalled_upload_is_cut_off(model: Path) -> None:
    app = create_app(model, "cpu", body_timeout=1.0)
    status, headers, body, took = asyncio.run(_stalled_upload(app))
    assert status == 408 and b"1 s" in body and headers[b"connection"] == b"close", body
    assert 0.9 < took < 2.5


def test_stopping_cuts_a_stalled_upload_short(model: Path) -> None:
    app = create_app(model, "cpu", body_timeout=60.0)
    status, headers, body, took = asyncio.run(_stalled_upload(app, stop_after=0.3))
    assert status == 503 and b"stopping" in body and headers[b"connection"] == b"close", body
    assert took < 2


def test_a_request_cancelled_at_the_stop_is_logged_as_such(model: Path) -> None:
    lines: list[str] = []
    app = create_app(model, "cpu", body_timeout=60.0, log=lines.append)

    async def cancel_midway() -> None:
        async def receive() -> dict:
            await asyncio.sleep(60)
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict) -> None:
            pass

        request = asyncio.ensure_future(app(_scope(1000), receive, send))
        await asyncio.sleep(0.2)
        request.cancel()  # what uvicorn does past its graceful timeout
        with pytest.raises(asyncio.CancelledError):
            await request

    asyncio.run(cancel_midway())
    assert len(lines) == 1 and " POST /api/predict cancelled " in lines[0], lines


# --- a real server: overflow, malformed HTTP, and a stop while an upload is stalled


def health_until(url: str, status: int, seconds: float = 10) -> int:
    """GET /api/health until it answers ``status`` (or ``seconds`` pass); the last status."""
    import httpx

    deadline = time.monotonic() + seconds
    while True:
        got = httpx.get(url + "/api/health", timeout=10).status_code
        if got == status or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def _stalled(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(
        b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
        b"Content-Length: 100000\r\n\r\n\x89"
    )
    return s


@pytest.mark.parametrize("signum, quiet", [(signal.SIGINT, False), (signal.SIGTERM, True)])
def test_real_server_overflow_and_stop_while_stalled(model: Path, seven: bytes, signum: int, quiet: bool) -> None:
    import httpx

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = rnnmnist("serve", str(model), "--port", str(port), "--device", "cpu", *(["-q"] if quiet else []))
    held: list[socket.socket] = []
    try:
        wait_until_up(url, server)
        # Over the connection limit: refused with 503, and said in the server's own words (or not at all).
        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(64)]
        assert health_until(url, 503) == 503  # once the server has accepted all 64
        for s in held:
            s.close()
        held = []
        assert health_until(url, 200) == 200  # once it has seen them close
        upgrade = {"connection": "Upgrade", "upgrade": "websocket"}  # uvicorn warns, twice, and answers as HTTP
        assert httpx.get(url + "/api/health", headers=upgrade, timeout=10).status_code == 200
        with socket.create_connection(("127.0.0.1", port)) as bad:  # malformed HTTP
            bad.sendall(b"GARBAGE / HTTP/1.1\r\n\r\n")
            bad.settimeout(10)
            answer = b""
            while chunk := bad.recv(1000):  # until the server closes the connection
                answer += chunk
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 400") and b"content-type: application/json" in head.lower(), head
            assert "malformed HTTP" in json.loads(body)["error"], body
        # A stalled upload, then the signal: it is cut short and the server stops at once.
        held = [_stalled(port)]
        time.sleep(0.5)
        with httpx.Client(base_url=url, timeout=10) as http:  # still answering
            assert http.get("/api/health").status_code == 200
    finally:
        started = time.monotonic()
        server.send_signal(signum)
        _, err = server.communicate(timeout=30)
        took = time.monotonic() - started
        answers = []
        for s in held:
            s.settimeout(5)
            answers.append(s.recv(1000))
            s.close()
    assert answers and answers[0].startswith(b"HTTP/1.1 503"), answers  # told why, not just cut
    text = err.decode()
    assert server.returncode == 128 + signum, text
    assert "Traceback" not in text and "CancelledError" not in text and "Exception in ASGI" not in text, text
    assert "Exceeded concurrency limit." not in text.splitlines(), text
    assert "Invalid HTTP request received." not in text.splitlines(), text
    assert "WebSocket library" not in text and "Unsupported upgrade request." not in text.splitlines(), text
    assert f"stopped ({signal.Signals(signum).name})" in text
    assert took < 4, text  # the stalled upload does not hold the stop for the graceful timeout (5 s)
    if quiet:  # as whole numbers: the port in the first line may hold the digits 503 (e.g. :50321)
        assert not re.search(r"\b(503|400)\b", text), text
    else:
        assert "503" in text and "connections" in text and "malformed" in text and "WebSocket" in text, text
