"""`rnnmnist serve CHECKPOINT`: the drawing page and the JSON API on a local port (the app is rnnmnist.serving)."""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from rnnmnist.cli.options import Common, checkpoint_argument, device_option, pass_common
from rnnmnist.errors import ExitCode, RnnmnistError

SERVE_EXAMPLES = """\b
Examples:
  rnnmnist serve runs/first/checkpoint.pt              # then open http://127.0.0.1:8000
  rnnmnist serve runs/first/checkpoint.pt --port 9000 --quiet
  curl -F file=@digit.png 'http://127.0.0.1:8000/api/predict?trace=true'
"""


def _require_serve() -> None:
    from rnnmnist.extras import require

    require("rnnmnist serve", "serve", "fastapi", "python_multipart", "uvicorn")


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port; refusing here gives one clear line instead of uvicorn's log."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except (OSError, UnicodeError) as e:
        raise RnnmnistError(f"cannot listen on {host}:{port}: {getattr(e, 'strerror', None) or e}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as e:
        sock.close()
        raise RnnmnistError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.set_inheritable(True)
    return sock


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_host(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not value.strip():  # an empty host means every interface to getaddrinfo, yet cannot be listened on
        raise click.BadParameter("it is empty: give an address, e.g. 127.0.0.1 (this machine) or 0.0.0.0 (every one)")
    return value


def _warn_exposed(host: str) -> None:
    everywhere = host in ("0.0.0.0", "::")
    where = "on every network interface" if everywhere else f"on {host}"
    click.echo(
        f"Warning: serving {where}: anyone who can reach this machine can use the page and the API "
        "(there is no authentication); use the default --host 127.0.0.1 to keep it local",
        err=True,
    )


def _log(line: str) -> None:
    click.echo(line, err=True)


def _create_app(checkpoint: Path, device: str, threads: int, quiet: bool, local: bool) -> Any:
    """The app serving ``checkpoint``, with torch's threads set for serving (this process's, so here)."""
    import torch

    from rnnmnist.serving.app import create_app
    from rnnmnist.serving.guard import LOOPBACK_HOSTS

    # A request is one image (or a few): its forward pass is far too small to split across cores,
    # and on a busy machine several threads spin waiting for each other (10x slower measured on
    # 2 shared cores). The other cores decode and preprocess uploads meanwhile.
    torch.set_num_threads(threads)

    # On loopback only loopback Host headers are answered, so a web page elsewhere cannot reach
    # this server through DNS rebinding.
    hosts = LOOPBACK_HOSTS if local else None
    return create_app(checkpoint, device, log=None if quiet else _log, allowed_hosts=hosts)


def _server(app: Any) -> Any:
    """uvicorn's server for ``app`` (its config sets uvicorn's loggers' levels: process-wide, so here)."""
    import uvicorn

    from rnnmnist.serving.limits import GRACEFUL_SECONDS, MAX_CONNECTIONS
    from rnnmnist.serving.server import StoppingServer, http_protocol

    config = uvicorn.Config(
        app,
        log_config=None,  # our own line per request; uvicorn reports only problems
        log_level="warning",
        access_log=False,
        server_header=False,
        limit_concurrency=MAX_CONNECTIONS,
        timeout_graceful_shutdown=GRACEFUL_SECONDS,
        http=http_protocol(),
    )
    return StoppingServer(config, app.state.stop_reading)


@contextmanager
def _uvicorn_lines(quiet: bool) -> Iterator[None]:
    """uvicorn's messages as this command's lines (see UvicornLines) while the server runs."""
    from rnnmnist.serving.server import UvicornLines

    uvicorn_log = logging.getLogger("uvicorn.error")
    # python-multipart logs why a body is malformed; the request's own 400 and its log line say it already.
    multipart_log = logging.getLogger("python_multipart")
    lines, quietly = UvicornLines(_log, quiet), logging.NullHandler()
    propagate = uvicorn_log.propagate, multipart_log.propagate
    uvicorn_log.addHandler(lines)
    multipart_log.addHandler(quietly)
    uvicorn_log.propagate = multipart_log.propagate = False  # else Python's last-resort handler prints them bare
    try:
        yield
    finally:
        uvicorn_log.removeHandler(lines)
        multipart_log.removeHandler(quietly)
        uvicorn_log.propagate, multipart_log.propagate = propagate


def _run_until_signal(server: Any, sock: socket.socket) -> int | None:
    """Run ``server`` on ``sock`` until it stops; 128 + the signal's number when SIGINT or SIGTERM stopped it."""
    from rnnmnist import signals

    # uvicorn catches SIGINT/SIGTERM, shuts down gracefully, restores these handlers and raises the signal again.
    try:
        with signals.handling(signals.raise_interrupted):
            server.run(sockets=[sock])
    except signals.Interrupted as stop:
        _log(f"stopped ({stop.name})")
        return stop.exit_code
    return None


@click.command(epilog=SERVE_EXAMPLES)
@checkpoint_argument
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    callback=_check_host,
    help="Address to listen on; 0.0.0.0 (or ::) serves other machines too, with a warning.",
)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="0 picks a free port.")
@device_option
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Torch threads for inference; one image at a time runs fastest on one.",
)
@click.option("-q", "--quiet", is_flag=True, help="No line per request (errors are still shown).")
@pass_common
def serve(common: Common, checkpoint: Path, host: str, port: int, threads: int, quiet: bool) -> int:
    """Serve CHECKPOINT: a page to draw digits on and a JSON API, at http://HOST:PORT.

    CHECKPOINT is a checkpoint file, or a run folder for its checkpoint.pt.

    \b
    GET  /                    the drawing page (also takes photos)
    POST /api/predict         one image: multipart file, raw image, or JSON
                              {"image_base64": ...} / {"pixels": 28x28}; ?trace=true
    POST /api/predict/batch   many images
    GET  /api/health, /api/model, /docs, /openapi.json

    The model is loaded once. A request may send 10 MB (else 413), within 30 s
    (else 408), of images that decode to 64 MP in all (else 413; 50 MP each).
    Ctrl-C stops the server (exit code 130). Needs rnnmnist[serve] (FastAPI, uvicorn).
    """
    _require_serve()
    local = _loopback(host)
    if not local:
        _warn_exposed(host)
    sock = _listen(host, port)  # before torch loads: a port in use is reported at once
    try:
        app = _create_app(checkpoint, common.device, threads, quiet, local)
    except BaseException:
        sock.close()
        raise
    shown = f"[{host}]" if ":" in host else host
    cfg, on = app.state.checkpoint.config, app.state.model.head.weight.device
    _log(
        f"serving {checkpoint} ({cfg.cell.upper()} {cfg.hidden_size}, {cfg.mode}) on {on} "
        f"at http://{shown}:{sock.getsockname()[1]}/ (Ctrl-C stops)"
    )
    server = _server(app)
    try:
        with _uvicorn_lines(quiet):
            stopped = _run_until_signal(server, sock)
    finally:
        sock.close()
    if stopped is not None:
        return stopped
    if not server.started:
        raise RnnmnistError("the server could not start (see the lines above)")
    return ExitCode.SUCCESS
