"""The drawing page in a real browser: headless Chromium draws digits on the canvas of a real `rnnmnist serve`.

Needs Debian's `chromium` (apt-get install chromium), the `playwright` Python package (it drives the
installed browser; nothing is downloaded) and the real MNIST ($RNNMNIST_DATA_DIR) to train a model
that reads handwriting. Screenshots go to the test's temporary folder; set RNNMNIST_SCREENSHOT_DIR to keep
them. Checked at 1280x900 (a laptop) and 390x844 (a phone).
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

from rnnmnist.cli.main import cli

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT_ENV = "RNNMNIST_SCREENSHOT_DIR"
# Strokes as fractions of the canvas: a slightly slanted 1, and a 7.
STROKES = {
    "1": [[(0.56, 0.14), (0.52, 0.5), (0.47, 0.86)]],
    "7": [[(0.24, 0.2), (0.76, 0.2), (0.58, 0.52), (0.42, 0.86)]],
    "11": [[(0.2, 0.15), (0.2, 0.85)], [(0.8, 0.15), (0.8, 0.85)]],  # two characters: not a digit
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


def screenshot(page, path: Path) -> None:
    page.screenshot(path=str(path), full_page=True)
    keep(path)


def canvas_box(page, canvas: str, key: str) -> tuple[float, float, float, float]:
    """A box (x, y, width, height, in CSS pixels of the canvas) that the page says it drew."""
    return tuple(page.evaluate(f"JSON.parse(document.querySelector('{canvas}').dataset.{key})"))


def overlaps(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


# Pixels of a canvas region (CSS pixels) as [r, g, b] lists, read from what the browser rendered.
PIXELS = """([id, x, y, w, h]) => {
  const c = document.getElementById(id);
  const s = c.width / c.clientWidth;
  const [px, py, pw, ph] = [x, y, w, h].map((v) => Math.round(v * s));
  const d = c.getContext('2d').getImageData(px, py, Math.max(1, pw), Math.max(1, ph)).data;
  const out = [];
  for (let i = 0; i < d.length; i += 4) out.push([d[i], d[i + 1], d[i + 2]]);
  return out;
}"""
BAR_GREEN = (31, 122, 77)  # the bars of the final answer (#1f7a4d)

# The smallest font of any visible text on the page, in CSS pixels (canvases report the text they drew).
SMALLEST_TEXT = """() => {
  const sizes = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const el = walker.currentNode.parentElement;
    const box = el.getBoundingClientRect();
    if (walker.currentNode.textContent.trim() && box.width > 0 && box.height > 0)
      sizes.push([parseFloat(getComputedStyle(el).fontSize), el.id || el.className || el.tagName]);
  }
  for (const c of document.querySelectorAll('canvas[data-min-font]')) sizes.push([Number(c.dataset.minFont), c.id]);
  return sizes.sort((a, b) => a[0] - b[0])[0];
}"""


def check_trace_label(page) -> None:
    """The red "decided" label lies inside the trace canvas, clear of the bars, and no bar is painted under it."""
    label, bars = canvas_box(page, "#seen", "labelBox"), canvas_box(page, "#seen", "barsBox")
    width, height = page.evaluate("(c => [c.clientWidth, c.clientHeight])(document.getElementById('seen'))")
    assert not overlaps(label, bars), (label, bars)
    assert overlaps(label, (0, 0, width, height)) and label[0] + label[2] <= width + 0.5, (label, width)
    assert label[1] >= 0 and label[1] + label[3] <= height + 0.5, (label, height)
    greens = [p for p in page.evaluate(PIXELS, ["seen", *label]) if all(abs(a - b) < 30 for a, b in zip(p, BAR_GREEN))]
    assert greens == [], f"{len(greens)} bar-green pixels under the label"


@pytest.mark.slow
def test_draw_digits_in_chromium(chromium: str, server: str, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("console", lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None)
            page.on("request", lambda r: requests.append(r.url))
            page.goto(server + "/")
            until(page, "!document.getElementById('model').textContent.startsWith('loading')")
            assert "LSTM 64" in page.locator("#model").inner_text()

            assert draw(page, STROKES["7"]) == "7"
            page.click("#clear")
            assert page.locator("#digit").inner_text() == "–"
            assert page.locator("#status").inner_text() == "Nothing drawn yet — draw a digit (0–9)."
            # Two characters: the page says so in words, not a digit; the guesses stay, in grey.
            assert draw(page, STROKES["11"]) == "?"
            assert page.evaluate("document.body.dataset.digit") == "no"
            verdict = page.locator("#verdict")
            assert verdict.is_visible()
            assert verdict.inner_text() == "That looks like more than one character. Draw one digit at a time."
            assert page.locator("#confidence").inner_text().startswith("not a digit · closest: ")
            screenshot(page, tmp_path / "serve-page-not-a-digit.png")
            page.click("#clear")
            assert not verdict.is_visible()
            assert draw(page, STROKES["1"]) == "1"
            assert page.evaluate("document.body.dataset.digit") == "yes" and not verdict.is_visible()
            assert page.locator("#decided").inner_text().startswith("Decided at row ")
            assert page.locator("#step").is_enabled()
            # "How it read" is on the first screen of a laptop, its trace and chart whole, beside the pad.
            assert page.locator("#reading").bounding_box()["y"] < 900
            for canvas in ("#seen", "#chart"):
                box = page.locator(canvas).bounding_box()
                assert box["y"] + box["height"] <= 900, f"{canvas} ends at {box['y'] + box['height']} px"
            check_trace_label(page)
            screenshot(page, tmp_path / "serve-page.png")

            before = int(page.evaluate("document.body.dataset.predictions"))
            page.set_input_files("#upload", str(ROOT / "examples" / "three.jpg"))  # a photo of a 3, grey paper
            until(
                page, f"document.body.dataset.busy === 'false' && Number(document.body.dataset.predictions) > {before}"
            )
            assert page.locator("#digit").inner_text() == "3"
            assert page.locator("#status").inner_text().startswith("three.jpg: decided at row")
            until(page, "document.getElementById('pad').dataset.photo === 'true'")
            corner = ["pad", 2, 2, 40, 40]  # far from any stroke drawn here
            assert any(p != [255, 255, 255] for p in page.evaluate(PIXELS, corner)), "the photo is not shown"
            screenshot(page, tmp_path / "serve-page-photo.png")
            # A stroke after the photo starts on a clean pad: the photo goes, the stroke is read alone.
            assert draw(page, STROKES["1"]) == "1"
            assert page.evaluate("document.getElementById('pad').dataset.photo") == "false"
            left = page.evaluate(PIXELS, corner)
            assert all(p == [255, 255, 255] for p in left), "the photo is still under the stroke"
            screenshot(page, tmp_path / "serve-page-after-photo.png")

            phone = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2)
            phone.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            phone.goto(server + "/")
            until(phone, "!document.getElementById('model').textContent.startsWith('loading')")
            assert draw(phone, STROKES["7"]) == "7"
            assert phone.evaluate("document.documentElement.scrollWidth") <= 390  # nothing wider than a phone
            size, where = phone.evaluate(SMALLEST_TEXT)
            assert size >= 12, f"text of {size} px in {where} on a phone"
            assert phone.evaluate("Number(document.getElementById('chart').dataset.minFont)") >= 12
            assert phone.evaluate("Number(document.getElementById('seen').dataset.minFont)") >= 12
            check_trace_label(phone)
            screenshot(phone, tmp_path / "serve-page-phone.png")

            docs = browser.new_page()
            docs.goto(server + "/docs")
            docs.wait_for_selector("text=POST /api/predict/batch")
            text = docs.evaluate("document.body.innerText")
            assert "`" not in text, "raw backticks on /docs"
            assert docs.locator("main code").count() > 3  # the descriptions' `code`, shown as code
            screenshot(docs, tmp_path / "serve-docs.png")
        finally:
            browser.close()
    assert problems == []
    elsewhere = [u for u in requests if not u.startswith((server, f"blob:{server}/"))]  # blob: the photo shown
    assert elsewhere == []
