"""The API's refusals: the exceptions a request can end with, and the one JSON body every refusal is answered with."""

from __future__ import annotations

from fastapi.responses import JSONResponse


class ApiError(Exception):
    """A request the API refuses: answered with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def over_size_limit(max_body: int) -> str:
    """Why a body over ``max_body`` bytes is refused (413), whether its Content-Length says so or its bytes do."""
    return f"the request is over the {max_body // (1024 * 1024)} MB limit"


class BodyTooLarge(ApiError):
    """A body found over the size limit as it arrives (no Content-Length, or a false one)."""

    def __init__(self, max_body: int) -> None:
        super().__init__(413, over_size_limit(max_body))


class BodyCut(Exception):
    """A body not read to its end (too slow, or the server stopping): answered, then the connection closed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def error_response(status: int, message: str) -> JSONResponse:
    """``{"error": message}`` with ``status``, the message on one line."""
    return JSONResponse({"error": " ".join(str(message).split())}, status_code=status)
