"""Fixtures of the serve tests: one tiny saved model per test module, and a drawn 7 as PNG bytes."""

from __future__ import annotations

from pathlib import Path

import pytest
from servetools import png, save_model

from rnnmnist.images.redraw import draw_shape


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_model(tmp_path_factory.mktemp("serve") / "checkpoint.pt")


@pytest.fixture(scope="module")
def seven() -> bytes:
    return png(draw_shape("7"))
