"""The drawing page in a real browser: headless Chromium draws digits on the canvas of a real `rnnmnist serve`.

Needs Debian's `chromium` (apt-get install chromium), the `playwright` Python package (it drives the
installed browser; nothing is downloaded) and the real MNIST ($RNNMNIST_DATA_DIR) to train a model
that reads handwriting. Set RNNMNIST_SCREENSHOT_DIR to keep the screenshots.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from rnnmnist.cli import cli

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOT_ENV = "RNNMNIST_SCREENSHOT_DIR"
# Strokes as fractions of the canvas: a slightly slanted 1, and a 7.
STROKES = {
    "1": [[(0.56, 0.14), (0.52, 0.5), (0.47, 0.86)]],
    "7": [[(0.24, 0.2), (0.76, 0.2), (0.58, 0.52), (0.42, 0.86)]],
}


@pytest.fixture(scope="session")
def chromium() -> str:
    """The browser's executable; checked before any model is trained for it."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("BROWSER TEST SKIPPED: the playwright package is missing (pip install playwright)")
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.skip("BROWSER TEST SKIPPED: no chromium on PATH (apt-get install -y chromium)")
    return found


@pytest.fixture(scope="session")
def reader(real_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small LSTM trained on the real MNIST for a few seconds: enough to read a drawn 1 and 7."""
    pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install 'rnnmnist[serve]'")
    out = tmp_path_factory.mktemp("browser") / "run"
    args = ["train", "--data-dir", str(real_data), "--out", str(out), "--iters", "30000", "--hidden-size", "64"]
    result = CliRunner().invoke(cli, [*args, "-q"])  # precision auto: bf16 where fast, else fp32
    assert result.exit_code == 0, result.output
    return out / "checkpoint.pt"


@pytest.fixture
def server(reader: Path) -> Iterator[str]:
    from test_serve import free_port, rnnmnist, wait_until_up

    port = free_port()
    process = rnnmnist("serve", str(reader), "--port", str(port), "--device", "cpu")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, process)
        yield url
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 130, err.decode()
    assert "Traceback" not in err.decode()


def until(page, condition: str, seconds: float = 20) -> None:
    """Wait for a JavaScript condition. (Playwright's wait_for_function evaluates strings, which the
    page's Content-Security-Policy forbids, as it should.)"""
    deadline = time.monotonic() + seconds
    while not page.evaluate(condition):
        assert time.monotonic() < deadline, f"timed out waiting for {condition}"
        time.sleep(0.05)


def draw(page, strokes: list[list[tuple[float, float]]]) -> str:
    """Draw ``strokes`` with the mouse and return the digit the page shows once it has answered."""
    box = page.locator("#pad").bounding_box()
    before = int(page.evaluate("document.body.dataset.predictions"))
    for stroke in strokes:
        points = [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in stroke]
        page.mouse.move(*points[0])
        page.mouse.down()
        for x, y in points[1:]:
            page.mouse.move(x, y, steps=12)
        page.mouse.up()
    until(page, f"document.body.dataset.busy === 'false' && Number(document.body.dataset.predictions) > {before}")
    return page.locator("#digit").inner_text()


def keep(path: Path) -> None:
    folder = os.environ.get(SCREENSHOT_ENV)
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(folder) / path.name)


@pytest.mark.slow
def test_draw_digits_in_chromium(chromium: str, server: str, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 1000})
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("console", lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None)
            page.on("request", lambda r: requests.append(r.url))
            page.goto(server + "/")
            until(page, "!document.getElementById('model').textContent.startsWith('loading')")
            assert "LSTM 64" in page.locator("#model").inner_text()

            assert draw(page, STROKES["7"]) == "7"
            page.click("#clear")
            assert page.locator("#digit").inner_text() == "–"
            assert draw(page, STROKES["1"]) == "1"
            assert page.locator("#decided").inner_text().startswith("Decided at row ")
            assert page.locator("#step").is_enabled()
            shot = tmp_path / "serve-page.png"
            page.screenshot(path=str(shot), full_page=True)
            keep(shot)

            before = int(page.evaluate("document.body.dataset.predictions"))
            page.set_input_files("#upload", str(ROOT / "examples" / "three.jpg"))  # a photo of a 3
            until(
                page, f"document.body.dataset.busy === 'false' && Number(document.body.dataset.predictions) > {before}"
            )
            assert page.locator("#digit").inner_text() == "3"
            assert page.locator("#status").inner_text().startswith("three.jpg: decided at row")

            phone = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2)
            phone.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            phone.goto(server + "/")
            assert draw(phone, STROKES["7"]) == "7"
            assert phone.evaluate("document.documentElement.scrollWidth") <= 390  # nothing wider than a phone
            shot = tmp_path / "serve-page-phone.png"
            phone.screenshot(path=str(shot), full_page=True)
            keep(shot)

            docs = browser.new_page()
            docs.goto(server + "/docs")
            docs.wait_for_selector("text=POST /api/predict/batch")
        finally:
            browser.close()
    assert problems == []
    elsewhere = [u for u in requests if not u.startswith((server, f"blob:{server}/"))]  # blob: the photo shown
    assert elsewhere == []
