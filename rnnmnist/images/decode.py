"""One image file (or stdin's bytes) -> its MNIST-style digit, or a ``Failed`` saying in one line why not.

Reading one input is: open and decode (Pillow), turn it upright (EXIF
orientation), make it grayscale, then :func:`rnnmnist.images.preprocess.to_mnist`.
:func:`prepare` runs all of it inside the input's own error handling, so a bad
image fails alone and the rest of a batch goes on.

That handling is the per-image boundary, where any ``Exception`` is caught on purpose: Pillow's
format plugins raise arbitrary exception types on damaged files (``struct.error``,
``AttributeError``, ``ZeroDivisionError``, ...), and one input must never stop a batch.
:func:`prepare` catches them last, after the exceptions it expects, and names the type in its one
line (so a bug can still be reported); :func:`pixel_count`, which reads only a header, answers 0 for
such a file and leaves the naming to :func:`prepare`.
"""

from __future__ import annotations

import contextlib
import io
import logging
import stat
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

from rnnmnist.images.preprocess import WORK_SIZE, ImageError, to_mnist

MAX_PIXELS = 50_000_000  # larger images are refused (decompression bombs)
MAX_STREAM_BYTES = 64 * 2**20  # an image read whole from a stream (stdin, a pipe) is at most this

Source = Path | bytes  # a file, or the bytes of one image read from stdin

# Damaged files make Pillow's decoders raise these (besides the OSError family).
_DAMAGED = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, KeyError, TypeError)

_UPRIGHT = {  # EXIF orientation -> the transposition that undoes it
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


@dataclass(frozen=True)
class Failed:
    """An input that cannot be used, and why, in one line."""

    reason: str


def _one_line(e: BaseException, limit: int = 100) -> str:
    return " ".join(str(e).split())[:limit]


def open_image(source: Source) -> Image.Image:
    """The decoded, upright image in a file (or bytes), refusing oversized images before decoding."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        im = _open(source)
        try:
            _decode(im)
            upright = _upright(im)
        except BaseException:
            im.close()  # the file stays open otherwise (multi-frame formats keep it for seeking)
            raise
    if upright is not im:
        im.close()
    return upright


def read_capped(stream: BinaryIO) -> bytes | None:
    """All of ``stream``, or None if it holds more than ``MAX_STREAM_BYTES`` (not read beyond that)."""
    data = stream.read(MAX_STREAM_BYTES + 1)  # one byte more tells "too large" from "just fits"
    return None if len(data) > MAX_STREAM_BYTES else data


def _open(source: Source) -> Image.Image:
    try:
        if isinstance(source, Path) and _is_stream(source):  # Pillow would read all of it into memory
            with source.open("rb") as stream:
                data = read_capped(stream)
            if data is None:
                raise ImageError(f"holds more than {MAX_STREAM_BYTES // 2**20} MiB, the limit for one image")
            source = data
        return Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    except FileNotFoundError:
        raise ImageError("no such file") from None
    except IsADirectoryError:
        raise ImageError("is a directory") from None
    except PermissionError:
        raise ImageError("permission denied") from None
    except UnidentifiedImageError:
        raise ImageError("not an image Pillow can read") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"image is over the {MAX_PIXELS / 1e6:.0f} MP limit") from None
    except OSError as e:
        if e.errno is None:  # Pillow's own: the content is wrong
            raise ImageError(f"damaged image ({_one_line(e)})") from None
        raise ImageError(f"cannot open it ({e.strerror or e})") from None  # the system's: a loop, a long name, ...
    except _DAMAGED as e:
        raise ImageError(f"damaged image ({_one_line(e)})") from None


def _is_stream(path: Path) -> bool:
    """A pipe, socket or device (not a file Pillow can seek in, nor a folder)."""
    try:
        mode = path.stat().st_mode
    except (OSError, ValueError):  # opening it says what is wrong
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def _decode(im: Image.Image) -> None:
    width, height = im.size
    if width * height > MAX_PIXELS:
        raise ImageError(
            f"image is {width}x{height} ({width * height / 1e6:.0f} MP), over the {MAX_PIXELS / 1e6:.0f} MP limit"
        )
    if width * height == 0:
        raise ImageError(f"image is {width}x{height}: it has no pixels")
    try:
        if im.format == "JPEG":
            im.draft("L", (WORK_SIZE * 4, WORK_SIZE * 4))  # decode at a reduced scale: much faster
        im.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"image is over the {MAX_PIXELS / 1e6:.0f} MP limit") from None
    except _DAMAGED as e:  # truncated or corrupt files
        raise ImageError(f"damaged image ({_one_line(e)})") from None


def _upright(im: Image.Image) -> Image.Image:
    """``im`` turned as its EXIF orientation says (only the pixels: the metadata is not needed after)."""
    try:
        orientation = im.getexif().get(ExifTags.Base.Orientation, 1)
    except _DAMAGED as e:  # the orientation is unknown, so the digit could be sideways
        raise ImageError(f"damaged EXIF metadata ({_one_line(e)})") from None
    method = _UPRIGHT.get(orientation) if isinstance(orientation, int) else None
    return im if method is None else im.transpose(method)


def to_gray(im: Image.Image) -> np.ndarray:
    """Grayscale float32 (H, W) in [0, 1] (NaN stays NaN); transparency is composited on white (paper)."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(im, dtype=np.float32)
        return np.clip(a / (65535.0 if a.max() > 255 else 255.0), 0.0, 1.0)
    if im.mode == "F":
        return np.clip(np.asarray(im, dtype=np.float32), 0.0, 1.0)
    if im.mode == "LAB":  # its L band is the lightness; Pillow converts LAB to nothing else
        return np.asarray(im.getchannel("L"), dtype=np.float32) / 255.0
    try:
        if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
            rgba = im.convert("RGBA")
            paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            im = Image.alpha_composite(paper, rgba)
        return np.asarray(im.convert("L"), dtype=np.float32) / 255.0
    except ValueError as e:  # a mode Pillow cannot convert to grayscale
        raise ImageError(f"cannot make a {im.mode} image grayscale ({_one_line(e)})") from None


def load_digit(source: Source) -> np.ndarray:
    """Read an image file (or bytes) and return its MNIST-style 28x28 digit; ImageError if it cannot."""
    with open_image(source) as im:
        return to_mnist(to_gray(im))


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Pillow and numpy warn about, and Pillow logs, what they skip or refuse in a damaged file. Either
    would print lines of its own; what matters is in the result. Both settings are restored after."""
    pil = logging.getLogger("PIL")
    level = pil.level
    pil.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        pil.setLevel(level)


def pixel_count(data: bytes) -> int:
    """Width x height of the image in ``data`` (its first frame, the one decoded), read from its header
    without decoding any pixel; 0 if it cannot even be opened (preparing it then fails as cheaply)."""
    try:
        with _quiet(), _open(data) as im:
            width, height = im.size
            return width * height
    except ImageError:
        return 0
    except Exception:  # boundary: a format plugin's own exception on a damaged header; prepare names it
        return 0


def prepare(source: Source) -> np.ndarray | Failed:
    """The digit in one input, or why it cannot be used: the per-input error boundary; never raises for an image."""
    try:
        with _quiet():
            return load_digit(source)
    except ImageError as e:
        return Failed(str(e))
    except MemoryError:
        return Failed("not enough memory to decode this image")
    except Exception as e:  # boundary: one damaged image fails alone, whatever its format plugin raised
        return Failed(f"could not prepare image: {type(e).__name__}")
