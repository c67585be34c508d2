"""The run configuration: one typed dataclass, the single source of every default.

Config files in ``configs/`` and command-line flags only override fields of
:class:`Config`; nothing else in the package restates a default. This module
imports neither torch nor click so that ``rnnmnist --help`` stays instant.
"""

from __future__ import annotations

import difflib
import math
import tomllib
from dataclasses import Field, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

CELLS = ("lstm", "gru", "rnn")
MODES = ("rows", "pixels", "permuted")
INITS = ("torch", "tf")
SCHEDULES = ("constant", "onecycle", "cosine")
OPTIMIZERS = ("adam", "adamw")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16")
# Batch size of evaluation and prediction passes: fast, and small enough for any laptop.
EVAL_BATCH_SIZE = 1000


class ConfigError(ValueError):
    """A configuration key or value that cannot be used; the message names it."""


def _opt(default: Any, help: str, *, choices: tuple[str, ...] | None = None, **bounds: float) -> Any:
    """A config field with its documentation and its allowed values.

    bounds: ``ge``/``gt``/``le``/``lt`` limits checked by :func:`validate`.
    """
    return field(default=default, metadata={"help": help, "choices": choices, **bounds})


@dataclass(frozen=True)
class Config:
    """Everything that defines a training run (and the model it produces).

    The defaults are rnnmnist's recommended recipe; ``configs/seed.toml`` is the
    original notebook, setting for setting.
    """

    # --- model
    cell: str = _opt("lstm", "recurrent cell: lstm, gru, or rnn (tanh)", choices=CELLS)
    mode: str = _opt(
        "rows",
        "how an image becomes a sequence: rows (28 steps of 28 pixels), pixels (784 steps of 1), "
        "permuted (784 steps under a fixed random permutation)",
        choices=MODES,
    )
    hidden_size: int = _opt(128, "hidden units per layer and direction", ge=1, le=4096)
    layers: int = _opt(1, "stacked recurrent layers", ge=1, le=16)
    bidirectional: bool = _opt(False, "also read each sequence backwards")
    dropout: float = _opt(0.0, "dropout between layers and before the head", ge=0.0, lt=1.0)
    init: str = _opt(
        "torch",
        "weight initialisation: torch (PyTorch's) or tf (the notebook's TF1 glorot kernel, N(0,1) head)",
        choices=INITS,
    )
    forget_bias: float = _opt(1.0, "added to the LSTM forget-gate bias at initialisation", ge=-100, le=100)
    # --- length of training
    iters: int = _opt(
        150_000,
        "training examples to see, counted like the notebook (which used 100000): "
        "steps run while step * batch_size < iters",
        ge=1,
        le=10**10,
    )
    epochs: float = _opt(0.0, "passes over the training split; when > 0 it replaces iters", ge=0.0, le=10_000)
    batch_size: int = _opt(128, "examples per optimisation step", ge=1, le=65_536)
    # --- optimisation
    optimizer: str = _opt("adam", "adam, or adamw (decoupled weight decay)", choices=OPTIMIZERS)
    lr: float = _opt(0.01, "learning rate (the peak of onecycle and cosine schedules)", gt=0.0, le=10.0)
    schedule: str = _opt(
        "onecycle",
        "learning-rate schedule: constant (the notebook), onecycle, or cosine (linear warm-up, cosine decay)",
        choices=SCHEDULES,
    )
    warmup: float = _opt(0.25, "fraction of the steps spent warming up (onecycle and cosine)", ge=0.0, lt=1.0)
    weight_decay: float = _opt(0.0, "weight decay (L2 for adam, decoupled for adamw)", ge=0.0, le=10.0)
    label_smoothing: float = _opt(0.0, "cross-entropy label smoothing", ge=0.0, lt=1.0)
    grad_clip: float = _opt(0.0, "clip the gradient's global norm to this; 0 turns clipping off", ge=0.0)
    # --- augmentation: `augment` turns on every aug_* transformation at its strength (0: that one off)
    augment: bool = _opt(
        True, "augment training images: each aug_* transformation below, with a random strength up to its value"
    )
    aug_shift: float = _opt(2.0, "augmentation: largest shift, in pixels", ge=0.0, le=8.0)
    aug_rotate: float = _opt(10.0, "augmentation: largest rotation, in degrees", ge=0.0, le=45.0)
    aug_scale: float = _opt(0.1, "augmentation: largest scaling, as a fraction of the size", ge=0.0, le=0.5)
    aug_shear: float = _opt(0.0, "augmentation: largest shear (tangent of its angle), along each axis", ge=0.0, le=0.5)
    aug_perspective: float = _opt(
        0.0, "augmentation: largest perspective tilt (a corner moves by up to this fraction)", ge=0.0, le=0.3
    )
    aug_elastic: float = _opt(
        0.0, "augmentation: largest elastic (smooth random) displacement, in pixels", ge=0.0, le=4.0
    )
    aug_thicker: float = _opt(
        0.5, "augmentation: strokes up to this many pixels thicker on each side (grey-scale dilation)", ge=0.0, le=3.0
    )
    aug_thinner: float = _opt(
        0.0, "augmentation: strokes up to this many pixels thinner on each side (grey-scale erosion)", ge=0.0, le=1.0
    )
    aug_blur: float = _opt(0.0, "augmentation: largest Gaussian blur sigma, in pixels", ge=0.0, le=1.5)
    aug_contrast: float = _opt(
        0.0, "augmentation: grey levels raised to a power up to 2**this (and down to 2**-this)", ge=0.0, le=2.0
    )
    aug_ink: float = _opt(0.0, "augmentation: ink up to this fraction fainter", ge=0.0, lt=1.0)
    aug_noise: float = _opt(0.0, "augmentation: largest Gaussian noise standard deviation", ge=0.0, le=0.3)
    # --- data
    val_size: int = _opt(5000, "training images held out for validation (the first ones, as the notebook)", ge=0)
    # --- run
    seed: int = _opt(0, "seed for initialisation, data order and dropout", ge=0, le=2**63 - 1)
    device: str = _opt("auto", "auto (cuda, then mps, then cpu), cpu, cuda or mps", choices=DEVICES)
    precision: str = _opt(
        "auto",
        "fp32, or bf16 autocast (weights stay fp32); auto picks bf16 where the device runs it fast "
        "(CUDA with bf16, AVX-512 CPUs) and stores the choice",
        choices=PRECISIONS,
    )
    log_every: int = _opt(10, "steps between log lines", ge=1)
    eval_every: int = _opt(
        0, "steps between validation passes; the best model so far is kept in OUT/best.pt; 0: none", ge=0
    )
    save_every: int = _opt(0, "steps between resumable checkpoints (OUT/checkpoint.pt); 0: only at the end", ge=0)

    def training_steps(self, n_train: int) -> int:
        """Optimisation steps this config runs on a training split of ``n_train`` images."""
        if self.epochs > 0:
            return max(1, math.floor(self.epochs * (n_train // self.batch_size)))
        # The notebook's loop: `while step * batch_size < training_iterations`, step from 1.
        return (self.iters - 1) // self.batch_size

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


CONFIG_FIELDS: dict[str, Field] = {f.name: f for f in fields(Config)}
DEFAULTS = Config()


def _describe_allowed(f: Field) -> str:
    m = f.metadata
    if m["choices"]:
        return "one of " + ", ".join(m["choices"])
    parts = []
    for key, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
        if key in m:
            parts.append(f"{sym} {m[key]:g}" if isinstance(m[key], float) else f"{sym} {m[key]}")
    kind = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}[f.type]
    return kind + (" " + " and ".join(parts) if parts else "")


def _coerce(f: Field, value: Any) -> Any:
    """Check one value's type and range; return it in the field's type."""
    name, kind = f.name, f.type
    bad = ConfigError(f"{name} must be {_describe_allowed(f)}, got {value!r}")
    # bool is an int in Python; a config must not silently take `true` as 1.
    if kind == "bool":
        if not isinstance(value, bool):
            raise bad
        return value
    if kind == "str":
        if not isinstance(value, str):
            raise bad
    elif kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
    elif kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        value = float(value)
        if not math.isfinite(value):
            raise bad
    m = f.metadata
    if m["choices"] and value not in m["choices"]:
        raise bad
    if kind in ("int", "float"):
        if ("ge" in m and value < m["ge"]) or ("gt" in m and value <= m["gt"]):
            raise bad
        if ("le" in m and value > m["le"]) or ("lt" in m and value >= m["lt"]):
            raise bad
    return value


def check_value(name: str, value: Any) -> Any:
    """One field's value, checked and converted; :class:`ConfigError` says what is allowed."""
    return _coerce(CONFIG_FIELDS[name], value)


def _check_keys(values: dict[str, Any], source: str) -> None:
    for key in values:
        if key not in CONFIG_FIELDS:
            close = difflib.get_close_matches(str(key), CONFIG_FIELDS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(CONFIG_FIELDS)})"
            raise ConfigError(f"{source}: unknown key {key!r}{hint}")


def _check_consistent(cfg: Config) -> None:
    if cfg.eval_every and cfg.val_size == 0:
        raise ConfigError("eval_every needs a validation split: val_size must be > 0")
    if cfg.epochs == 0 and cfg.training_steps(10**12) < 1:
        raise ConfigError(
            f"iters={cfg.iters} with batch_size={cfg.batch_size} runs no step "
            f"(steps run while step * batch_size < iters); make iters larger than batch_size"
        )


def build(*sources: tuple[str, dict[str, Any]]) -> Config:
    """Apply ``(source_name, values)`` overrides in order onto the defaults.

    Later sources win. Every key and value is checked; a :class:`ConfigError`
    names the source and the key.
    """
    cfg = DEFAULTS
    for source, values in sources:
        _check_keys(values, source)
        checked = {}
        for key, value in values.items():
            try:
                checked[key] = _coerce(CONFIG_FIELDS[key], value)
            except ConfigError as e:
                raise ConfigError(f"{source}: {e}") from None
        cfg = replace(cfg, **checked)
    _check_consistent(cfg)
    return cfg


def from_dict(values: dict[str, Any], source: str = "config") -> Config:
    return build((source, values))


def read_toml(path: str | Path) -> dict[str, Any]:
    """Read a flat TOML config file; errors name the file."""
    p = Path(path)
    try:
        text = p.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {p} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {p} is a directory") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {p}: {e}") from None
    try:
        values = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from None
    for key, value in values.items():
        if isinstance(value, dict):
            raise ConfigError(f"{p}: [{key}] tables are not used; write plain `key = value` lines")
    return values


def to_toml(cfg: Config) -> str:
    """The resolved config as a commented TOML file that ``--config`` reads back."""
    lines = ["# rnnmnist resolved configuration; rerun with: rnnmnist train --config THIS_FILE", ""]
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        lines.append(f"# {f.metadata['help']}")
        lines.append(f"{f.name} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, float):
        return repr(value)
    return str(value)
