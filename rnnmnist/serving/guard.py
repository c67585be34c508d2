"""The guard around every request to `rnnmnist serve`: the Host check, the body's size and time limits, the
decode budget, the security headers and the log line.

Connections beyond :data:`~rnnmnist.serving.limits.MAX_CONNECTIONS` are refused by uvicorn itself, before
a request reaches the guard.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable

import numpy as np
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rnnmnist.images.decode import MAX_PIXELS, pixel_count
from rnnmnist.serving.refusals import ApiError, BodyCut, BodyTooLarge, error_response, over_size_limit
from rnnmnist.serving.requests import Source

Log = Callable[[str], None]
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
SECURITY_HEADERS = {
    # The page loads nothing from elsewhere and runs no inline code: say so, so a browser enforces it.
    "content-security-policy": (
        "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}

# A Host header: a name or IPv4 address, or an IPv6 address in brackets; then an optional port, ASCII digits only.
_HOST = re.compile(r"(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<name>[^\[\]:]+))(?::[0-9]{1,5})?")


def host_name(host: str) -> str | None:
    """The name (or address) in a Host header, lower case and without brackets or port; None if malformed."""
    match = _HOST.fullmatch(host)
    if match is None:
        return None
    return (match["ipv6"] or match["name"]).lower()


# --- the decode budget: what a request's images would cost, read from their headers before any is decoded


def _pixels_to_decode(source: Source) -> int:
    """The pixels decoding ``source`` would cost, from its header only (a larger image is refused undecoded)."""
    if isinstance(source, bytes):
        pixels = pixel_count(source)
        return pixels if pixels <= MAX_PIXELS else 0
    return source.size if isinstance(source, np.ndarray) else 0


def decode_cost(items: list[tuple[str, Source]]) -> int:
    """The pixels preparing ``items`` would decode in all, read from their headers: cheap, decodes nothing."""
    return sum(_pixels_to_decode(source) for _, source in items)


def check_decode_budget(cost: int, max_request_pixels: int) -> None:
    """Refuse (413) a request whose images would decode to more than ``max_request_pixels`` in all."""
    if cost > max_request_pixels:
        raise ApiError(
            413,
            f"the images add up to {cost / 1e6:.1f} MP, over the {max_request_pixels / 1e6:.0f} MP one request "
            "may decode: send them in several requests",
        )


# --- the body's size and time limits, and the guard middleware


class Reading:
    """The request bodies being read: each has until its deadline, and all are cut short when the server stops."""

    def __init__(self, timeout: float) -> None:
        self.timeout, self.stopping = timeout, False
        self._deadlines: set[asyncio.Timeout] = set()

    def stop(self) -> None:
        """Cut every body being read short (each gets 503), and any that starts later; call on the event loop."""
        self.stopping = True
        for deadline in self._deadlines:
            deadline.reschedule(asyncio.get_running_loop().time())

    def receiver(self, receive: Receive, max_body: int) -> Receive:
        """``receive`` for one request, refusing a body over ``max_body`` bytes, late, or read while stopping."""
        received, complete = 0, False
        deadline = asyncio.get_running_loop().time() + self.timeout

        async def limited_receive() -> Message:
            nonlocal received, complete
            if complete:  # the body is in: what follows is only the client's going away
                return await receive()
            try:
                if self.stopping:
                    raise TimeoutError
                async with asyncio.timeout_at(deadline) as cut:
                    self._deadlines.add(cut)
                    try:
                        message = await receive()
                    finally:
                        self._deadlines.discard(cut)
            except TimeoutError:
                if self.stopping:
                    raise BodyCut(503, "the server is stopping; send the request again later") from None
                raise BodyCut(408, f"the request body did not arrive within {self.timeout:g} s") from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_body:  # no Content-Length, or a false one
                    raise BodyTooLarge(max_body)
                complete = not message.get("more_body", False)
            return message

        return limited_receive


class Guard:
    """Around every request: the Host check, the body's size and time limits, security headers and the log line."""

    def __init__(
        self, app: ASGIApp, max_body: int, allowed_hosts: tuple[str, ...] | None, log: Log | None, reading: Reading
    ) -> None:
        self.app, self.max_body, self.allowed_hosts, self.log = app, max_body, allowed_hosts, log
        self.reading = reading

    def _refusal(self, headers: Headers) -> JSONResponse | None:
        if self.allowed_hosts is not None:
            host = headers.get("host", "")
            if host_name(host) not in self.allowed_hosts:
                return error_response(
                    400, f"unexpected Host header {host!r}: this server answers to {self.allowed_hosts[0]}"
                )
        length = headers.get("content-length")
        if length is not None:
            if not re.fullmatch("[0-9]+", length):
                return error_response(400, "bad Content-Length header")
            if int(length) > self.max_body:
                return error_response(413, over_size_limit(self.max_body))
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), "500"

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = str(message["status"])
                headers = MutableHeaders(scope=message)
                for key, value in SECURITY_HEADERS.items():
                    headers.setdefault(key, value)
            await send(message)

        try:
            refusal = self._refusal(Headers(scope=scope))
            if refusal is not None:
                await refusal(scope, receive, send_with_headers)
            else:
                await self.app(scope, self.reading.receiver(receive, self.max_body), send_with_headers)
        except asyncio.CancelledError:
            if status == "500":  # not answered: the server is stopping, past its graceful timeout
                status = "cancelled"
            raise
        finally:
            if self.log is not None:
                self.log(_request_line(scope, status, started))


def _request_line(scope: Scope, status: str, started: float) -> str:
    client = scope.get("client") or ("-", 0)
    query = scope.get("query_string", b"").decode("latin-1")
    target = scope["path"] + (f"?{query}" if query else "")
    return (
        f"{time.strftime('%Y-%m-%d %H:%M:%S')} {client[0]} {scope['method']} {target} {status} "
        f"{1000 * (time.perf_counter() - started):.1f} ms"
    )
