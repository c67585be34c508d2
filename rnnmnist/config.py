"""The run configuration: `Config` = `ModelConfig` + `TrainingConfig`, the single source of every default.

Config files in ``configs/`` and command-line flags only override fields of
:class:`Config`; nothing else in the package restates a default. This module
imports neither torch nor click so that ``rnnmnist --help`` stays instant.
"""

from __future__ import annotations

import difflib
import math
import tomllib
from collections.abc import Collection
from dataclasses import Field, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

from rnnmnist.errors import shown

Cell = Literal["lstm", "gru", "rnn"]
Mode = Literal["rows", "pixels", "permuted"]
Init = Literal["torch", "tf"]
Schedule = Literal["constant", "onecycle", "cosine"]
Optimizer = Literal["adam", "adamw"]
Device = Literal["auto", "cpu", "cuda", "mps"]
Precision = Literal["auto", "fp32", "bf16"]
Dataset = Literal["mnist", "fashion-mnist", "kmnist", "emnist-digits", "qmnist"]
CELLS, MODES, INITS = get_args(Cell), get_args(Mode), get_args(Init)
SCHEDULES, OPTIMIZERS = get_args(Schedule), get_args(Optimizer)
DEVICES, PRECISIONS = get_args(Device), get_args(Precision)
DATASETS = get_args(Dataset)
# The data sets whose classes are the digits 0-9: for them a model learns, and predict says, "not a digit".
DIGIT_DATASETS: tuple[str, ...] = ("mnist", "emnist-digits", "qmnist")
# Batch size of evaluation and prediction passes: fast, and small enough for any laptop.
SEARCH_TABLE = (
    "search"  # a sweep file's table of what to vary (rnnmnist.experiments.sweep); a preset with it is a sweep space
)
EVAL_BATCH_SIZE = 1000


class ConfigError(ValueError):
    """A configuration key or value that cannot be used; the message names it."""


def _opt(default: Any, help: str, **bounds: float) -> Any:
    """A config field with its documentation; bounds (``ge``/``gt``/``le``/``lt``) are checked by ``build``.

    Allowed words of a string field come from its ``Literal`` type.
    """
    return field(default=default, metadata={"help": help, **bounds})


@dataclass(frozen=True)
class ModelConfig:
    """What the network is: everything needed to rebuild it from a checkpoint's weights."""

    cell: Cell = _opt("lstm", "recurrent cell: lstm, gru, or rnn (tanh)")
    mode: Mode = _opt(
        "rows",
        "how an image becomes a sequence: rows (28 steps of 28 pixels), pixels (784 steps of 1), "
        "permuted (784 steps under a fixed random permutation)",
    )
    hidden_size: int = _opt(
        64,
        "hidden units per layer and direction (a row-wise run shorter than 204,800 iters that does not set it: 96)",
        ge=1,
        le=4096,
    )
    layers: int = _opt(1, "stacked recurrent layers", ge=1, le=16)
    bidirectional: bool = _opt(False, "also read each sequence backwards")
    dropout: float = _opt(0.0, "dropout between layers and before the head", ge=0.0, lt=1.0)
    init: Init = _opt(
        "torch",
        "weight initialisation: torch (PyTorch's) or tf (the notebook's TF1 glorot kernel, N(0,1) head)",
    )
    forget_bias: float = _opt(1.0, "added to the LSTM forget-gate bias at initialisation", ge=-100, le=100)
    permutation_seed: int = _opt(
        1234, "seed of the fixed pixel order of --mode permuted (one order for every run, so results compare)", ge=0
    )


@dataclass(frozen=True)
class TrainingConfig:
    """How a model is trained: length, optimisation, data, and how the run computes."""

    # --- length of training
    iters: int = _opt(
        210_000,
        "training examples to see, counted like the notebook (which used 100000): "
        "steps run while step * batch_size < iters",
        ge=1,
        le=10**10,
    )
    epochs: float = _opt(0.0, "passes over the training split; when > 0 it replaces iters", ge=0.0, le=10_000)
    batch_size: int = _opt(
        256,
        "examples per optimisation step (a row-wise run shorter than 204,800 iters that does not set it: 128)",
        ge=1,
        le=65_536,
    )
    # --- optimisation
    optimizer: Optimizer = _opt("adam", "adam, or adamw (decoupled weight decay)")
    lr: float = _opt(0.02, "learning rate (the peak of onecycle and cosine schedules)", gt=0.0, le=10.0)
    schedule: Schedule = _opt(
        "onecycle",
        "learning-rate schedule: constant (the notebook), onecycle, or cosine (linear warm-up, cosine decay)",
    )
    warmup: float = _opt(0.25, "fraction of the steps spent warming up (onecycle and cosine)", ge=0.0, lt=1.0)
    beta2: float = _opt(
        0.99,
        "Adam's second-moment decay; 0.99 (torch's default is 0.999) adapts sooner, which measured steadier "
        "across seeds and better at lr 0.02 in a run of a few hundred steps",
        gt=0.0,
        lt=1.0,
    )
    weight_decay: float = _opt(0.0, "weight decay (L2 for adam, decoupled for adamw)", ge=0.0, le=10.0)
    label_smoothing: float = _opt(0.0, "cross-entropy label smoothing", ge=0.0, lt=1.0)
    grad_clip: float = _opt(0.0, "clip the gradient's global norm to this; 0 turns clipping off", ge=0.0)
    # --- augmentation: `augment` turns on every aug_* transformation at its strength (0: that one off)
    augment: bool = _opt(
        True, "augment training images: each aug_* transformation below, with a random strength up to its value"
    )
    aug_fraction: float = _opt(
        1.0, "augmentation: share of each batch augmented; the rest trains as it is (cheaper steps)", ge=0.0, le=1.0
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
        0.25, "augmentation: strokes up to this many pixels thicker on each side (grey-scale dilation)", ge=0.0, le=3.0
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
    aug_writers: float = _opt(
        0.5,
        "augmentation: share of each batch given other writers' and scanners' looks, in five equal parts: "
        "binarised ink, stretched to fill the box, a heavier pen, a lighter pen, a small scan enlarged",
        ge=0.0,
        le=1.0,
    )
    # --- knowing what is not a digit
    outlier_share: float = _opt(
        0.25,
        "share of each batch's examples that are generated non-digits (strokes, scribbles, blobs, letters, "
        "pieces and pairs of digits), trained towards no class in particular (outlier exposure), so that "
        "predict can tell 'not a digit'; 0: none. A run on another data set that does not set it: 0; "
        "a row-wise run shorter than 204,800 iters: 0.125",
        ge=0.0,
        lt=1.0,
    )
    outlier_weight: float = _opt(0.25, "weight of the non-digits' loss beside the digits'", ge=0.0, le=100.0)
    digit_keep: float = _opt(
        0.985,
        "share of validation digits (as written, and with other writers' looks) that the 'not like any digit' "
        "threshold, calibrated at the end of training and stored in the checkpoint, keeps",
        ge=0.5,
        le=1.0,
    )
    # --- data
    dataset: Dataset = _opt(
        "mnist",
        "the data set: mnist, fashion-mnist, kmnist, emnist-digits or qmnist (28x28 images of 10 classes, "
        "in torchvision's folder layout under --data-dir)",
    )
    val_size: int = _opt(5000, "training images held out for validation (the first ones, as the notebook)", ge=0)
    # --- run
    seed: int = _opt(0, "seed for initialisation, data order and dropout", ge=0, le=2**63 - 1)
    device: Device = _opt("auto", "auto (cuda, then mps, then cpu), cpu, cuda or mps")
    precision: Precision = _opt(
        "auto",
        "fp32, or bf16 autocast (weights stay fp32); auto picks bf16 where the device runs it fast "
        "(CUDA with bf16, CPUs with AVX-512 BF16 or AMX) and stores the choice",
    )
    log_every: int = _opt(10, "steps between log lines", ge=1)
    eval_every: int = _opt(
        0, "steps between validation passes; the best model so far is kept in OUT/best.pt; 0: none", ge=0
    )
    save_every: int = _opt(0, "steps between resumable checkpoints (OUT/checkpoint.pt); 0: only at the end", ge=0)


@dataclass(frozen=True)
class Config(TrainingConfig, ModelConfig):
    """A whole run, flat as users write it (TOML keys and flags): the model's fields, then training's.

    The defaults are rnnmnist's recommended recipe; ``configs/seed.toml`` is the
    original notebook, setting for setting.
    """

    @property
    def outliers(self) -> int:
        """Generated non-digits in each batch: ``outlier_share`` of it, rounded down (so digits always remain)."""
        return math.floor(self.batch_size * self.outlier_share)

    @property
    def digits_per_step(self) -> int:
        """Training images in each batch: the batch less its generated non-digits."""
        return self.batch_size - self.outliers

    def training_steps(self, n_train: int) -> int:
        """Optimisation steps this config runs on a training split of ``n_train`` images."""
        if self.epochs > 0:  # passes over the training images, whatever share of each batch they are
            return max(1, math.floor(self.epochs * (n_train // self.digits_per_step)))
        # The notebook's loop: `while step * batch_size < training_iterations`, step from 1.
        return (self.iters - 1) // self.batch_size

    @property
    def model(self) -> ModelConfig:
        return ModelConfig(**{name: getattr(self, name) for name in MODEL_FIELDS})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


CONFIG_FIELDS: dict[str, Field] = {f.name: f for f in fields(Config)}
MODEL_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(ModelConfig))
# Field name -> its resolved type (bool, int, float, or a Literal of allowed words).
FIELD_TYPES: dict[str, Any] = get_type_hints(Config)
DEFAULTS = Config()


def choices(name: str) -> tuple[str, ...] | None:
    """The allowed words of a string field, None for other fields."""
    hint = FIELD_TYPES[name]
    return get_args(hint) if get_origin(hint) is Literal else None


def _describe_allowed(f: Field) -> str:
    m, allowed = f.metadata, choices(f.name)
    if allowed:
        return "one of " + ", ".join(allowed)
    parts = []
    for key, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
        if key in m:
            parts.append(f"{sym} {m[key]:g}" if isinstance(m[key], float) else f"{sym} {m[key]}")
    kind = {int: "an integer", float: "a number", bool: "true or false"}[FIELD_TYPES[f.name]]
    return kind + (" " + " and ".join(parts) if parts else "")


def _coerce(f: Field, value: Any) -> Any:
    """Check one value's type and range; return it in the field's type."""
    kind, allowed = FIELD_TYPES[f.name], choices(f.name)
    bad = ConfigError(f"{f.name} must be {_describe_allowed(f)}, got {shown(value)}")
    # bool is an int in Python; a config must not silently take `true` as 1.
    if kind is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if allowed:
        if not isinstance(value, str) or value not in allowed:
            raise bad
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        value = float(value)
        if not math.isfinite(value):
            raise bad
    m = f.metadata
    if kind in (int, float):
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
            raise ConfigError(f"{source}: unknown key {shown(key)}{hint}")


def _check_consistent(cfg: Config) -> None:
    if cfg.eval_every and cfg.val_size == 0:
        raise ConfigError("eval_every needs a validation split: val_size must be > 0")
    if cfg.epochs == 0 and cfg.training_steps(10**12) < 1:
        raise ConfigError(
            f"iters={cfg.iters} with batch_size={cfg.batch_size} runs no step "
            f"(steps run while step * batch_size < iters); make iters larger than batch_size"
        )


# The recipe for short runs. The defaults are tuned for their own length, 210,000 examples (820 steps of
# 256, the shortest time to 98.5%). Given far fewer, such as the notebook's 100,000 (390 steps of 256:
# 97.9%), a run spends them better in twice the steps of a wider LSTM: 781 steps of 128 through an LSTM 96
# measured 98.40% in bf16 and 98.48% in fp32 (mean of seeds 0-2), in less wall time than the reference
# loop's 781 steps of an LSTM 128. Measured for rows only: the 784-step modes cost too much more per unit.
# Its few steps need their digits: an eighth of its batch are generated non-digits, not a quarter.
SHORT_RUN_EXAMPLES = 800 * 256  # iters below this: fewer than 800 steps of the default batch
SHORT_RUN: dict[str, Any] = {"batch_size": 128, "hidden_size": 96, "outlier_share": 0.125}


def fit_to_length(cfg: Config, given: Collection[str]) -> Config:
    """``cfg`` with the short-run recipe in the fields of :data:`SHORT_RUN` that no source set (``given``
    names those that one did), where the run is row-wise and its length, given in ``iters``, is below
    :data:`SHORT_RUN_EXAMPLES`. A length in ``epochs`` keeps the defaults."""
    if cfg.epochs > 0 or cfg.iters >= SHORT_RUN_EXAMPLES or cfg.mode != "rows":
        return cfg
    return replace(cfg, **{key: value for key, value in SHORT_RUN.items() if key not in given})


# Fields that only mean something for the digits: a run on another data set that does not set them has none.
DIGITS_ONLY: dict[str, Any] = {"outlier_share": 0.0, "aug_writers": 0.0}


def fit_to_dataset(cfg: Config, given: Collection[str]) -> Config:
    """``cfg`` without the digits-only fields (:data:`DIGITS_ONLY`) that no source set, where the data set's
    classes are not digits: generated non-digits and pen looks are for digit models."""
    if cfg.dataset in DIGIT_DATASETS:
        return cfg
    return replace(cfg, **{key: value for key, value in DIGITS_ONLY.items() if key not in given})


def build(*sources: tuple[str, dict[str, Any]]) -> Config:
    """Apply ``(source_name, values)`` overrides in order onto the defaults.

    Later sources win. Every key and value is checked; a :class:`ConfigError`
    names the source and the key. A short run's unset fields then follow
    :func:`fit_to_length` and :func:`fit_to_dataset`: the config returned is the one that trains, resolved.
    """
    cfg = DEFAULTS
    given: set[str] = set()
    for source, values in sources:
        given.update(values)
        _check_keys(values, source)
        checked = {}
        for key, value in values.items():
            try:
                checked[key] = _coerce(CONFIG_FIELDS[key], value)
            except ConfigError as e:
                raise ConfigError(f"{source}: {e}") from None
        cfg = replace(cfg, **checked)
    cfg = fit_to_dataset(fit_to_length(cfg, given), given)
    _check_consistent(cfg)
    return cfg


def from_dict(values: dict[str, Any], source: str = "config") -> Config:
    return build((source, values))


def length_override(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` from one source where giving ``iters`` means: not the ``epochs`` of a lower source."""
    if "iters" in values and "epochs" in values:
        raise ConfigError("give iters or epochs, not both")
    return {**values, "epochs": 0.0} if "iters" in values else values


# Fields added after checkpoints were first written, with the value that versions before them trained
# with: a stored config without one is read with that value, not today's default.
BEFORE_FIELD_EXISTED: dict[str, Any] = {"beta2": 0.999, "aug_writers": 0.0, "outlier_share": 0.0}


def from_stored(values: dict[str, Any]) -> tuple[Config, list[str]]:
    """The config stored in a checkpoint, for using its model: model fields must be valid (the weights
    depend on them); a training field that this version does not know or accept is set aside.

    Returns the config and one note per field set aside, so a checkpoint written by
    another rnnmnist version (or with a damaged training setting) still evaluates.
    """
    notes, usable = [], {key: value for key, value in BEFORE_FIELD_EXISTED.items() if key not in values}
    for key, value in values.items():
        if key not in CONFIG_FIELDS:
            if key in MODEL_FIELDS:  # pragma: no cover - every model field is a config field
                raise ConfigError(f"unknown model key {shown(key)}")
            notes.append(f"unknown key {shown(key)} ignored")
            continue
        try:
            usable[key] = _coerce(CONFIG_FIELDS[key], value)
        except ConfigError as e:
            if key in MODEL_FIELDS or key == "dataset":  # the data set names the classes: no default guess
                raise
            notes.append(f"{e}; the default {getattr(DEFAULTS, key)!r} is used")
    cfg = replace(DEFAULTS, **usable)
    try:
        _check_consistent(cfg)
    except ConfigError as e:
        notes.append(str(e))
    return cfg, notes


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
    if text.startswith(RESOLVED_HEADER):
        # A run's config.toml holds every field its version had: one it lacks was added since, and the run
        # trained as that field's value before it existed (a 0.3.0 run: no non-digits, no writer looks).
        values = {**{k: v for k, v in BEFORE_FIELD_EXISTED.items() if k not in values}, **values}
    return values


RESOLVED_HEADER = "# rnnmnist resolved configuration"


def to_toml(cfg: Config) -> str:
    """The resolved config as a commented TOML file that ``--config`` reads back."""
    lines = [f"{RESOLVED_HEADER}; rerun with: rnnmnist train --config THIS_FILE", ""]
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
