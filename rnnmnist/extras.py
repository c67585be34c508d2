"""The optional parts of rnnmnist (pip extras): import what a command needs, or say which extra to install.

The core install (torch, torchvision, click, rich, pillow, numpy) trains, evaluates
and predicts; ``serve``, ``sweep``, ``onnx``, ``plots``, ``tensorboard`` and
``postgres`` add the rest (``all`` is every one). A missing one ends in one line:
``rnnmnist serve needs the serve extra: pip install 'rnnmnist[serve]'``.
"""

from __future__ import annotations

import importlib

from rnnmnist.errors import RnnmnistError, one_line


class MissingExtra(RnnmnistError):
    """An optional dependency is not installed; the message names the pip command to run (exit code 1)."""


def missing(what: str, extra: str, reason: str | None = None) -> MissingExtra:
    """The error for ``what`` (e.g. "rnnmnist serve") lacking ``extra``; ``reason`` when not simply absent."""
    why = f" ({reason})" if reason else ""
    return MissingExtra(f"{what} needs the {extra} extra{why}: pip install 'rnnmnist[{extra}]'")


def require(what: str, extra: str, *modules: str) -> None:
    """Import ``modules``, or raise :class:`MissingExtra` naming ``pip install 'rnnmnist[extra]'``."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError:
            raise missing(what, extra) from None
        except ImportError as e:  # installed but broken (e.g. a compiled part built for another version)
            raise missing(what, extra, f"{name} cannot be imported: {one_line(e)}") from None
