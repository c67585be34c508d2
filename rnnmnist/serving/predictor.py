"""The model `rnnmnist serve` answers with, loaded once, and the thread pools that feed it.

Decoding and preprocessing run in a small thread pool (requests that decode little in threads of their
own), and inference in a pool of one thread, so torch never runs two forward passes at once and never
fights itself for cores; the event loop only waits.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from rnnmnist.images.decode import Failed, prepare
from rnnmnist.images.predict import Prediction, predict_digits
from rnnmnist.images.preprocess import ImageError, to_mnist
from rnnmnist.serving.guard import check_decode_budget, decode_cost
from rnnmnist.serving.limits import LIGHT_PIXELS
from rnnmnist.serving.requests import Source
from rnnmnist.training import checkpoint as ckpt_io
from rnnmnist.training.device import resolve_device, usable_precision


def _prepare(source: Source) -> np.ndarray | Failed:
    """The 28x28 digit the network sees, made as `rnnmnist predict` makes it, or why it cannot be."""
    if isinstance(source, str):
        return Failed(source)
    if isinstance(source, bytes):
        return prepare(source)  # predict's per-input boundary: never raises for an image
    try:
        return to_mnist(source)
    except ImageError as e:
        return Failed(str(e))


def _prepare_all(items: list[tuple[str, Source]]) -> list[tuple[str, np.ndarray | Failed]]:
    return [(name, _prepare(source)) for name, source in items]


def _record(result: Prediction, show: bool) -> dict[str, Any]:
    """``predict --json``'s record; with ``show``, the 28x28 image the network saw as well."""
    record = result.to_json()
    if show and result.digit is not None:
        record["image"] = [[round(float(v), 3) for v in row] for row in result.digit]
    return record


class Predictor:
    """The model in a checkpoint on a device, warmed up, and the pools that prepare images and run it."""

    def __init__(self, checkpoint_path: str | Path, device: str, workers: int | None, max_request_pixels: int) -> None:
        self.device = resolve_device(device)
        self.model, self.checkpoint = ckpt_io.load_model(checkpoint_path, self.device)
        self.precision = usable_precision(self.checkpoint.config.precision, self.device).name
        self.can_trace = self.model.directions == 1  # a reading trace needs a one-directional model
        self.digit_check = self.checkpoint.digit_check  # "one digit or not"; None for another data set's model
        self.max_request_pixels = max_request_pixels
        self._prepare_pool = ThreadPoolExecutor(
            workers or min(4, os.cpu_count() or 1), thread_name_prefix="rnnmnist-prepare"
        )
        self._light_pool = ThreadPoolExecutor(2, thread_name_prefix="rnnmnist-prepare-light")  # see LIGHT_PIXELS
        self._model_pool = ThreadPoolExecutor(1, thread_name_prefix="rnnmnist-model")  # one forward pass at a time
        # The first forward pass allocates and picks kernels: do it now rather than in the first request.
        warm_up = [("warm-up", np.zeros((28, 28), dtype=np.float32))]
        predict_digits(self.model, self.precision, warm_up, self.can_trace)

    async def predict(self, items: list[tuple[str, Source]], trace: bool, show: bool) -> list[dict[str, Any]]:
        """``predict --json``'s record for each item, in order; refuses (413) items over the decode budget."""
        cost = await self._in_pool(self._light_pool, decode_cost, items)
        check_decode_budget(cost, self.max_request_pixels)  # before anything is decoded
        pool = self._light_pool if cost <= LIGHT_PIXELS else self._prepare_pool
        named = await self._in_pool(pool, _prepare_all, items)
        results = await self._in_pool(
            self._model_pool, predict_digits, self.model, self.precision, named, trace, self.digit_check
        )
        return [_record(r, show) for r in results]

    async def _in_pool(self, pool: ThreadPoolExecutor, func: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(pool, func, *args)

    def close(self) -> None:
        """Stop the pools; work not yet started is dropped."""
        for pool in (self._prepare_pool, self._light_pool, self._model_pool):
            pool.shutdown(cancel_futures=True)
