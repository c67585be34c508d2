"""The presets: the TOML files of the repository's ``configs/``, shipped inside the package, found by name.

``--config seed`` names a preset; ``--config my.toml`` or ``--config runs/x/config.toml``
a file. A value without ``/`` and without ``.toml`` is a preset's name (or, if no
preset has it, a file of that name in the current folder). A preset's first
comment line says what it is for; one with a ``[search]`` table is a sweep space
(``rnnmnist sweep --config``), the others are training configs.

Where the files are: a built wheel carries ``configs/`` as ``rnnmnist/configs/``
(``package-dir`` in pyproject.toml); a checkout (an editable install, or the
source on ``PYTHONPATH``) reads ``configs/`` beside the package. Torch-free.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from rnnmnist.config import SEARCH_TABLE, ConfigError

SUFFIX = ".toml"
Kind = Literal["train", "sweep"]
_PACKAGE = Path(__file__).resolve().parent


class PresetError(ConfigError):
    """A --config value that names no preset and no file (a usage error, exit code 2)."""


@dataclass(frozen=True)
class Preset:
    """One preset: its name (the file's stem), file, kind and one-line summary."""

    name: str
    path: Path
    kind: Kind  # "train": a training config; "sweep": a sweep space with a [search] table
    summary: str  # the file's first comment line

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "kind": self.kind, "summary": self.summary, "path": str(self.path)}


def folder() -> Path:
    """The folder the presets are read from: the installed package's, else the checkout's ``configs/``."""
    packaged = _PACKAGE / "configs"
    if packaged.is_dir():
        return packaged
    checkout = _PACKAGE.parent
    # Only a checkout (pyproject.toml beside the package): site-packages may hold another project's configs/.
    if (checkout / "pyproject.toml").is_file() and (checkout / "configs").is_dir():
        return checkout / "configs"
    raise PresetError(f"no presets found: neither {packaged} nor a checkout's configs/ exists (a broken install?)")


def _read(path: Path) -> Preset:
    text = path.read_text(encoding="utf-8")
    summary = next((line.lstrip("#").strip() for line in text.splitlines() if line.startswith("#")), "")
    try:
        kind: Kind = "sweep" if isinstance(tomllib.loads(text).get(SEARCH_TABLE), dict) else "train"
    except tomllib.TOMLDecodeError as e:
        raise PresetError(f"preset {path.stem} ({path}) is not valid TOML: {e}") from None
    return Preset(path.stem, path, kind, summary)


def available() -> list[Preset]:
    """Every preset, sorted by name."""
    return [_read(p) for p in sorted(folder().glob(f"*{SUFFIX}"))]


def is_name(value: str) -> bool:
    """A value with no folder separator and no ``.toml`` is meant as a preset's name."""
    return "/" not in value and os.sep not in value and not value.endswith(SUFFIX)


def find(name: str) -> Preset:
    """The preset called ``name``; :class:`PresetError` says which exist and which is closest."""
    presets = {p.name: p for p in available()}
    if name in presets:
        return presets[name]
    close = difflib.get_close_matches(name, presets, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    listed = ", ".join(presets)
    raise PresetError(f"no preset {name!r}{hint}; presets: {listed} (rnnmnist presets says what each is for)")


def resolve(value: str, kind: Kind) -> Path:
    """The file a ``--config`` value means: a preset of ``kind`` by name, or a path to an existing file."""
    if is_name(value):
        try:
            preset = find(value)
        except PresetError as e:
            if Path(value).is_file():  # a config file without the .toml ending, in the current folder
                return Path(value)
            raise PresetError(f"{e}; or give a TOML file's path") from None
        if preset.kind != kind:
            use = "rnnmnist sweep --config" if preset.kind == "sweep" else "rnnmnist train --config"
            what = "a sweep space" if preset.kind == "sweep" else "a training config"
            raise PresetError(f"preset {value!r} is {what}: use it with {use} {value}")
        return preset.path
    path = Path(value)
    if path.is_dir():
        raise PresetError(f"{value} is a folder, not a TOML file")
    if not path.exists():
        stems = {p.name for p in available()}
        hint = f" (the preset of that name is --config {path.stem})" if path.stem in stems else ""
        raise PresetError(f"file {value} does not exist{hint}")
    return path
