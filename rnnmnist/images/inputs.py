"""A command line's image inputs (files, folders, ``-`` for stdin) prepared as digits, many at once in worker processes.

Each input becomes a digit or a :class:`~rnnmnist.images.decode.Failed` of its own; one
bad input never stops the others. Worker processes die with the process that
started them and hold none of its standard streams, and
:func:`rnnmnist.signals.interrupting` turns SIGINT/SIGTERM into an exception that
stops them on the way out.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import BinaryIO

import numpy as np

from rnnmnist import signals
from rnnmnist.images.decode import MAX_STREAM_BYTES, Failed, Source, prepare, read_capped

PARALLEL_FROM = 64  # images; fewer are not worth starting worker processes for
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>

Outcome = np.ndarray | Failed  # a (28, 28) float32 digit, or why there is none
Stdin = Callable[[], BinaryIO | None]  # called only if "-" is an input; returning None: stdin is closed


def standard_input() -> BinaryIO | None:
    """This process's stdin as a binary stream, or None when it is closed (``0<&-``)."""
    return None if sys.stdin is None else getattr(sys.stdin, "buffer", None)


def read_stdin(stdin: Stdin | None) -> bytes | Failed:
    """The one image on stdin (None: there is none); one over ``MAX_STREAM_BYTES`` is refused without reading it all."""
    stream = stdin() if stdin is not None else None
    if stream is None:
        return Failed("stdin is closed")
    try:
        if stream.isatty():
            return Failed("stdin is a terminal: pipe an image into it")
        data = read_capped(stream)
    except (OSError, ValueError) as e:  # ValueError: the stream was closed
        return Failed(f"cannot read stdin ({' '.join(str(e).split())[:100]})")
    if data is None:
        return Failed(f"stdin holds more than {MAX_STREAM_BYTES // 2**20} MiB, the limit for one image")
    return data if data else Failed("stdin is empty")


def expand_inputs(inputs: Sequence[str], stdin: Stdin | None = standard_input) -> list[tuple[str, Source | Failed]]:
    """(name, source) per image: a folder gives each image inside, ``-`` the bytes on stdin."""
    out: list[tuple[str, Source | Failed]] = []
    stdin_used = False
    for item in inputs:
        if item == "-":
            out.append((item, Failed("standard input given twice") if stdin_used else read_stdin(stdin)))
            stdin_used = True
            continue
        path = Path(item)
        try:
            is_dir = path.is_dir()
        except (OSError, ValueError):  # a name too long, a path not allowed to be looked at: opening says why
            is_dir = False
        if not is_dir:
            out.append((item, path))
            continue
        try:
            found = list_images(path)
        except OSError as e:
            out.append((item, Failed(f"cannot list folder: {e.strerror or e}")))
            continue
        if not found:
            out.append((item, Failed("no images in this folder")))
        out.extend((str(p), p) for p in found)
    return out


def list_images(folder: Path) -> list[Path]:
    """The image files directly inside ``folder``, by name; hidden files are skipped."""
    return sorted(
        p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()
    )


def _prepare_chunk(sources: list[Source]) -> list[Outcome]:
    return [prepare(s) for s in sources]


class InputImages:
    """The digits in a command line's image inputs, prepared from the moment the context is entered.

    Inputs are files, folders (each image inside, by name) or ``-`` (one image on
    stdin, read only then). Decoding and preprocessing are CPU work in Python, so
    many images go to worker processes, one per core. Workers are forked where that
    is safe (Linux; they only run numpy and Pillow), so they start in milliseconds
    and work while the caller goes on, e.g. importing torch and loading a model.
    Leaving the context stops the workers; leaving it by an exception (an
    :class:`rnnmnist.signals.Interrupted` included) stops them at once.
    """

    def __init__(self, inputs: Sequence[str], stdin: Stdin | None = standard_input, workers: int | None = None) -> None:
        self.inputs = list(inputs)
        self.stdin = stdin
        self.workers = workers if workers is not None else min(os.cpu_count() or 1, 8)
        self.named: list[tuple[str, Source | Failed]] | None = None
        self.pool: ProcessPoolExecutor | None = None
        self._chunks: list[tuple[Future, int]] = []  # (future, how many sources it prepares)

    def __enter__(self) -> InputImages:
        self.named = expand_inputs(self.inputs, self.stdin)
        sources = [src for _, src in self.named if not isinstance(src, Failed)]
        if self.workers > 1 and len(sources) >= PARALLEL_FROM:
            method = "fork" if sys.platform.startswith("linux") else "spawn"
            self.pool = ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context(method),
                initializer=_init_worker,
                initargs=(os.getpid(),),
            )
            try:
                with signals.held():  # the workers start here
                    size = max(1, math.ceil(len(sources) / (4 * self.workers)))
                    for i in range(0, len(sources), size):
                        chunk = sources[i : i + size]
                        self._chunks.append((self.pool.submit(_prepare_chunk, chunk), len(chunk)))
            except BaseException:
                self._stop_workers()
                raise
        return self

    def results(self) -> list[tuple[str, Outcome]]:
        """(input name, digit or why it failed), in input order."""
        if self.named is None:
            raise RuntimeError("InputImages.results() is for use inside `with InputImages(...) as images:`")
        if self.pool is None:
            loaded = _prepare_chunk([src for _, src in self.named if not isinstance(src, Failed)])
        else:
            loaded = []
            for future, n in self._chunks:
                try:
                    loaded += future.result()
                except BrokenProcessPool:  # a worker was killed (or a decoder crashed it): the rest fail alone
                    loaded += [Failed("a worker process died before preparing this image")] * n
        it = iter(loaded)
        return [(name, src if isinstance(src, Failed) else next(it)) for name, src in self.named]

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        if self.pool is None:
            return
        if kind is not None:
            self._stop_workers()  # failing or interrupted: their work is not wanted
            return
        try:
            self.pool.shutdown(cancel_futures=True)
        except BaseException:  # interrupted while waiting for them
            self._stop_workers()
            raise

    def _stop_workers(self) -> None:
        """Cancel what has not started and end the workers now, not after their current chunk."""
        pool = self.pool
        if pool is None:
            return
        terminate = getattr(pool, "terminate_workers", None)  # Python >= 3.14
        if terminate is not None:
            terminate()
            return
        processes = list((getattr(pool, "_processes", None) or {}).values())  # the same, by hand, before 3.14
        pool.shutdown(wait=False, cancel_futures=True)
        for p in processes:
            with contextlib.suppress(OSError, ValueError):  # already gone
                p.terminate()
        for p in processes:
            with contextlib.suppress(OSError, ValueError, AssertionError):
                p.join(timeout=2)


def _init_worker(parent: int) -> None:
    """In each worker: die with the parent, leave signals to it, and hold none of its standard streams."""
    signals.left_to_parent()
    _die_with_parent(parent)
    # Workers never print. Pointing their stdin/stdout/stderr elsewhere means that a worker still
    # alive for a moment after its parent cannot keep a caller's pipes open.
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


def _die_with_parent(parent: int) -> None:
    """The kernel kills this process when ``parent`` dies (Linux); elsewhere a thread watches for it."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0:
                if os.getppid() != parent:  # it died before prctl took effect
                    os._exit(1)
                return
        except (OSError, AttributeError):  # no libc symbol: fall back to watching
            pass
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:  # an orphan is adopted by another process
        time.sleep(0.5)
    os._exit(1)
