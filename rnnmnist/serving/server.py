"""uvicorn as `rnnmnist serve` runs it: a server that cuts uploads short when it stops, an HTTP protocol that
refuses malformed requests in JSON like every other refusal, and uvicorn's own messages as request lines.

The CLI builds uvicorn's config and installs :class:`UvicornLines` on uvicorn's logger (process-wide
state); nothing here changes either.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
import traceback
from collections.abc import Callable

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from rnnmnist.serving.guard import Log
from rnnmnist.serving.limits import GRACEFUL_SECONDS, MAX_CONNECTIONS


class StoppingServer(uvicorn.Server):
    """uvicorn's server, calling ``stop_reading`` as it begins to shut down."""

    def __init__(self, config: uvicorn.Config, stop_reading: Callable[[], None]) -> None:
        super().__init__(config)
        self._stop_reading = stop_reading

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Uploads still arriving get 503 now, rather than holding the stop for the graceful timeout
        # and then being cancelled.
        self._stop_reading()
        await super().shutdown(sockets)


class JsonErrorsH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, answering a request it cannot parse with JSON like every other refusal."""

    def send_400_response(self, msg: str) -> None:
        body = json.dumps({"error": f"malformed HTTP request: {msg}"}).encode()
        headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
        headers.append((b"content-length", str(len(body)).encode()))
        self.transport.write(self.conn.send(h11.Response(status_code=400, headers=headers, reason=b"Bad Request")))
        self.transport.write(self.conn.send(h11.Data(data=body)))
        self.transport.close()


def http_protocol() -> type[H11Protocol] | str:
    """The protocol for uvicorn's ``http`` setting: :class:`JsonErrorsH11Protocol`.

    uvicorn writes that 400 itself, as text/plain, from ``H11Protocol.send_400_response`` (uvicorn 0.29 to
    today); where that method is missing (another uvicorn) its plain answer stays: "auto".
    """
    if not callable(getattr(H11Protocol, "send_400_response", None)):
        return "auto"
    return JsonErrorsH11Protocol


class UvicornLines(logging.Handler):
    """uvicorn's own messages as this command's lines: the refusals it answers itself (a connection over the
    limit, malformed HTTP) as request lines, hidden by ``quiet``; requests cancelled at a stop as one line,
    without the traceback of each cancellation; anything else (a bug) as uvicorn says it."""

    def __init__(self, log: Log, quiet: bool) -> None:
        super().__init__(logging.WARNING)
        self.log, self.quiet = log, quiet

    def emit(self, record: logging.LogRecord) -> None:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, asyncio.CancelledError):
            return  # cancelled by the stop, which says so in the "Cancel N running task(s)" line
        message = record.getMessage()
        line = _refusal_line(message)
        if line is not None:
            if line and not self.quiet:
                self.log(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}")
        elif message.startswith("Cancel ") and record.args:
            self.log(f"stopping: {record.args[0]} request(s) still running after {GRACEFUL_SECONDS} s were cancelled")
        else:
            self.log(message + ("\n" + "".join(traceback.format_exception(error)).rstrip() if error else ""))


def _refusal_line(message: str) -> str | None:
    """A refusal uvicorn answered itself, as a request line without its time ("" to say nothing); else None."""
    if message.startswith("Exceeded concurrency limit"):
        return f"503 refused a request: {MAX_CONNECTIONS} connections are open, the most served at once"
    if message.startswith("Invalid HTTP request"):
        return "400 refused a malformed HTTP request"
    if message.startswith("Unsupported upgrade request"):
        return "a request asked to switch to WebSocket, which this server does not offer"
    if message.startswith("No supported WebSocket library"):
        return ""  # uvicorn's hint to install one: the page and API need none
    return None
