"""What one request to `rnnmnist serve` may send and cost, and how many the server holds at once.

The numbers are read in one place: the guard and the request parser enforce them, ``/api/model``
reports them, and ``rnnmnist serve --help`` states them.
"""

from __future__ import annotations

MAX_BODY = 10 * 1024 * 1024  # bytes per request; larger ones get 413
MAX_BATCH = 256  # images per batch request
# Decoding costs time and memory by the pixel (about 11 ms and 11 MB per megapixel measured), and a
# 49 MP PNG can be 6 KB: what a request may decode is capped by pixels, read from the images' headers
# before any is decoded. One image may have MAX_PIXELS (50 MP, as `rnnmnist predict`); one request this
# many in all (a 49 MP image, or five 12 MP photos), so a request holds a thread about a second at most.
MAX_REQUEST_PIXELS = 64_000_000
# A request that decodes at most this many pixels in all (a drawing, a scan of a digit, a small photo) is
# prepared in threads of its own, so it never queues behind large images that others send.
LIGHT_PIXELS = 4_000_000
BODY_TIMEOUT = 30.0  # seconds for a request's whole body to arrive; a stalled upload gets 408
MAX_NAME = 200  # characters of an input's name echoed back
MAX_CONNECTIONS = 64  # open at once (each request at most 10 MB); beyond, uvicorn answers 503
GRACEFUL_SECONDS = 5  # on Ctrl-C, how long requests already being answered may take to finish
