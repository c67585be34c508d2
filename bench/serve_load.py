"""Load test for `rnnmnist serve`: N requests from C concurrent clients against 127.0.0.1.

Starts `rnnmnist serve CHECKPOINT --quiet` on a free local port, posts PNGs of real test digits
(or drawn shapes without MNIST) to /api/predict as multipart uploads from C asyncio clients
(httpx), and reports requests/s, latency percentiles and errors. As a reference measured in the
same run, it first times the same work in-process (decode, preprocess and predict one image at a
time), so the figure survives a noisy shared machine as a ratio.

With --attacks it measures instead how the server holds up under hostile clients: the latency of
/api/health (probed every 50 ms) and of one honest client's /api/predict, alone and during each
attack: batch bombs (256 tiny 7000x7000 1-bit PNGs in one request, refused by the decode budget),
the heaviest work the budget still admits (one 49 MP image per request, from several clients), and
stalled uploads (a byte every 3 s on many connections, until the server's body timeout cuts them).

    python bench/serve_load.py runs/five/checkpoint.pt --data-dir ../shared/data
    python bench/serve_load.py CKPT --requests 2000 --concurrency 16 --trace --json
    python bench/serve_load.py CKPT --attacks
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"  # this load test never leaves the machine
WARMUP = 50


def digits_as_png(data_dir: str | None, n: int = 256) -> list[bytes]:
    """PNG files of real test digits, as people would upload them (dark on light, 28x28)."""
    if data_dir:
        from rnnmnist.training.data import load_split

        images = load_split(Path(data_dir), "test", 0, False).images[:n].numpy()  # (n, 28, 28) uint8
    else:
        from rnnmnist.images.redraw import draw_shape

        images = np.stack([(draw_shape(k) * 255).astype(np.uint8) for k in "017"] * (n // 3))
    out = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(255 - image).save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


def reference(checkpoint: str, pngs: list[bytes], trace: bool, seconds: float = 3.0) -> float:
    """Images/s for the same work in-process, one image at a time: decode, preprocess, predict."""
    import torch

    from rnnmnist.images.decode import load_digit
    from rnnmnist.images.predict import predict_digits
    from rnnmnist.training.checkpoint import load_model

    torch.set_num_threads(1)  # as the server runs it
    model, ckpt = load_model(checkpoint)
    for png in pngs[:20]:  # warm-up: the first passes allocate and pick kernels
        predict_digits(model, ckpt.config.precision, [("x", load_digit(png))], trace)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        png = pngs[done % len(pngs)]
        predict_digits(model, ckpt.config.precision, [("x", load_digit(png))], trace)
        done += 1
    return done / (time.perf_counter() - started)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (Linux), to tell where the cores went."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


async def load(url: str, pngs: list[bytes], requests: int, concurrency: int, trace: bool) -> dict:
    import httpx

    latencies: list[float] = []
    errors: dict[str, int] = {}
    next_request = 0
    path = "/api/predict" + ("?trace=true" if trace else "")

    async def client(http: httpx.AsyncClient, count: int, record: bool) -> None:
        nonlocal next_request
        while next_request < count:
            i = next_request
            next_request += 1
            started = time.perf_counter()
            try:
                r = await http.post(path, files={"file": (f"{i}.png", pngs[i % len(pngs)], "image/png")})
                ok = r.status_code == 200 and "prediction" in r.json()
                problem = None if ok else f"HTTP {r.status_code}"
            except httpx.HTTPError as e:
                problem = type(e).__name__
            if record:
                latencies.append(time.perf_counter() - started)
                if problem:
                    errors[problem] = errors.get(problem, 0) + 1

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as http:
        await asyncio.gather(*(client(http, WARMUP, False) for _ in range(concurrency)))
        next_request = 0
        started = time.perf_counter()
        await asyncio.gather(*(client(http, requests, True) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return {
        "requests": len(latencies),
        "concurrency": concurrency,
        "seconds": round(elapsed, 2),
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p90_ms": round(float(np.percentile(ms, 90)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1),
        "max_ms": round(float(ms.max()), 1),
        "errors": sum(errors.values()),
        "error_kinds": errors,
    }


# --- attacks


def one_bit_png(width: int, height: int) -> bytes:
    """A real, decodable 1-bit PNG of width x height blank pixels: 6 KB for 49 MP."""
    row = b"\0" + b"\xff" * ((width + 7) // 8)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    idat = zlib.compress(row * height, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def percentiles(seconds: list[float]) -> dict:
    if not seconds:
        return {"n": 0}
    ms = np.array(seconds) * 1000
    return {
        "n": len(ms),
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1),
        "max_ms": round(float(ms.max()), 1),
    }


async def stalled_upload(port: int, every: float, until: float) -> tuple[str, float]:
    """POST a 100 kB body a byte every ``every`` s; what the server answered (or did) and after how long."""
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(
        f"POST /api/predict HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: image/png\r\n"
        "Content-Length: 100000\r\n\r\n".encode()
    )
    outcome = "still open"
    try:
        while time.perf_counter() < until:
            writer.write(b"\x89")
            await writer.drain()
            try:
                line = await asyncio.wait_for(reader.readline(), every)
            except TimeoutError:
                continue
            outcome = line.decode("latin-1").split(" ")[1] if line.startswith(b"HTTP/") else "closed"
            break
    except ConnectionError:
        outcome = "closed"
    finally:
        writer.close()
    return outcome, time.perf_counter() - started


def multipart(files: list[tuple[str, bytes]], boundary: str = "rnnmnist-bench") -> tuple[bytes, str]:
    """A multipart/form-data body of (name, PNG) files, built once: the attackers send it as it is."""
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
        f"Content-Type: image/png\r\n\r\n".encode()
        + data
        + b"\r\n"
        for name, data in files
    ]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


async def _attackers(url: str, port: int, kind: str, seconds: float, attackers: int) -> dict:
    import httpx

    until = time.perf_counter() + seconds
    outcomes: dict[str, int] = {}
    times: list[float] = []

    def tally(outcome: str, took: float) -> None:
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        times.append(took)

    async def bomber(body: bytes, kind: str) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=120) as http:
            while time.perf_counter() < until:
                started = time.perf_counter()
                try:
                    r = await http.post("/api/predict/batch", content=body, headers={"content-type": kind})
                    tally(str(r.status_code), time.perf_counter() - started)
                except httpx.HTTPError as e:
                    tally(type(e).__name__, time.perf_counter() - started)

    async def staller() -> None:
        while time.perf_counter() < until:
            tally(*await stalled_upload(port, 3.0, until))

    bomb = one_bit_png(7000, 7000)  # 49 MP in 6 KB
    if kind == "batch bomb":
        body, content_type = multipart([(f"{i}.png", bomb) for i in range(256)])  # 1.5 MB, 12,544 MP
        await asyncio.gather(*(bomber(body, content_type) for _ in range(attackers)))
    elif kind == "largest admitted":
        body, content_type = multipart([("big.png", bomb)])
        await asyncio.gather(*(bomber(body, content_type) for _ in range(attackers)))
    elif kind == "stalled uploads":
        await asyncio.gather(*(staller() for _ in range(attackers)))
    return {"attack_outcomes": outcomes, "attack_request": percentiles(times)}


def run_attackers(url: str, port: int, kind: str, seconds: float, attackers: int) -> dict:
    """The attack, in a process of its own: its clients' work must not slow the probes that measure it."""
    return asyncio.run(_attackers(url, port, kind, seconds, attackers))


async def probes(url: str, seconds: float, png: bytes) -> dict:
    """/api/health every 50 ms, and one honest client's /api/predict (a digit PNG) every 100 ms."""
    import httpx

    until = time.perf_counter() + seconds
    health: list[float] = []
    honest: list[float] = []

    async def probe() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            while time.perf_counter() < until:
                started = time.perf_counter()
                r = await http.get("/api/health")
                if r.status_code == 200:
                    health.append(time.perf_counter() - started)
                await asyncio.sleep(max(0.0, 0.05 - (time.perf_counter() - started)))

    async def predict() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            while time.perf_counter() < until:
                started = time.perf_counter()
                r = await http.post("/api/predict", files={"file": ("digit.png", png, "image/png")})
                if r.status_code == 200:
                    honest.append(time.perf_counter() - started)
                await asyncio.sleep(0.1)

    await asyncio.gather(probe(), predict())
    return {"health": percentiles(health), "honest_predict": percentiles(honest)}


def attacks(url: str, port: int, png: bytes, stall_seconds: float) -> list[dict]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    plan = [
        ("none", 5.0, 0),
        ("batch bomb", 10.0, 4),
        ("largest admitted", 10.0, 4),
        ("stalled uploads", stall_seconds, 48),
    ]
    results = []
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        pool.submit(time.sleep, 0).result()  # the process started before the clock does
        for kind, seconds, attackers in plan:
            attack = pool.submit(run_attackers, url, port, kind, seconds, attackers)
            measured = asyncio.run(probes(url, seconds, png))
            results.append({"attack": kind, "attackers": attackers, "seconds": seconds, **measured, **attack.result()})
    return results


def show_attacks(results: list[dict]) -> None:
    def part(name: str, p: dict) -> str:
        if not p.get("n"):
            return f"{name}: none answered"
        return f"{name} p50 {p['p50_ms']} / p99 {p['p99_ms']} / max {p['max_ms']} ms ({p['n']})"

    for r in results:
        print(
            f"{r['attack']} ({r['attackers']} attackers, {r['seconds']:g} s): {part('/api/health', r['health'])}; "
            f"{part('honest /api/predict', r['honest_predict'])}"
            + (
                f"; attack requests {r['attack_outcomes']}, {part('answered in', r['attack_request'])}"
                if r["attack_outcomes"]
                else ""
            )
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--trace", action="store_true", help="ask for the reading trace in every request")
    parser.add_argument("--data-dir", default=os.environ.get("RNNMNIST_DATA_DIR"), help="real MNIST test digits")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--attacks", action="store_true", help="measure latency under hostile clients instead")
    parser.add_argument(
        "--stall-seconds", type=float, default=40.0, help="how long the stalled uploads go on (past the body timeout)"
    )
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    pngs = digits_as_png(args.data_dir)
    in_process = None if args.attacks else reference(args.checkpoint, pngs, args.trace)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "rnnmnist", "serve", args.checkpoint, "--host", HOST, "--port", str(port)]
    server = subprocess.Popen([*command, "--device", args.device, "--quiet"], env=env, stderr=subprocess.PIPE)
    try:
        import httpx

        url = f"http://{HOST}:{port}"
        for _ in range(600):
            try:
                if httpx.get(url + "/api/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        if args.attacks:
            results = attacks(url, port, pngs[0], args.stall_seconds)
        else:
            server_before, client_before = cpu_seconds(server.pid), time.process_time()
            result = asyncio.run(load(url, pngs, args.requests, args.concurrency, args.trace))
            server_after, client_after = cpu_seconds(server.pid), time.process_time()
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)
    if args.attacks:
        machine = {"cpus": os.cpu_count(), "machine": platform.processor() or platform.machine()}
        if args.json:
            print(json.dumps({"attacks": results, **machine}))
        else:
            show_attacks(results)
        return
    result.update(
        {
            "trace": args.trace,
            # CPU time per request (warm-up included) survives a shared machine better than wall time.
            "server_cpu_ms_per_request": None
            if server_before is None
            else round(1000 * (server_after - server_before) / (args.requests + WARMUP), 2),
            "client_cpu_ms_per_request": round(1000 * (client_after - client_before) / (args.requests + WARMUP), 2),
            "in_process_ms_per_image": round(1000 / in_process, 2),
            "in_process_images_per_s": round(in_process, 1),
            "server_vs_in_process": round(result["requests_per_s"] / in_process, 2),
            "cpus": os.cpu_count(),
            "machine": platform.processor() or platform.machine(),
        }
    )
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"{result['requests']} requests, {args.concurrency} concurrent clients, trace {args.trace}: "
        f"{result['requests_per_s']} requests/s; latency p50 {result['p50_ms']} ms, p90 {result['p90_ms']} ms, "
        f"p99 {result['p99_ms']} ms, max {result['max_ms']} ms; errors {result['errors']} {result['error_kinds'] or ''}"
        "\n"
        f"reference, the same work in-process one image at a time: {result['in_process_images_per_s']} images/s "
        f"(server / in-process = {result['server_vs_in_process']})\n"
        f"CPU per request: server {result['server_cpu_ms_per_request']} ms, this client "
        f"{result['client_cpu_ms_per_request']} ms; in-process {result['in_process_ms_per_image']} ms per image"
    )


if __name__ == "__main__":
    main()
