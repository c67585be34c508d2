"""The typed config (rnnmnist.config): defaults, bounds, config files, presets, the short-run recipe, and how
flags, the environment and files combine."""

from __future__ import annotations

import json
import tomllib
from dataclasses import fields
from pathlib import Path

import pytest
from clitools import invoke

from rnnmnist import config
from rnnmnist.config import Config, ConfigError

ALL_CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.toml"))
# Files with a [search] table are sweep spaces (rnnmnist sweep --config), the others training configs.
SWEEPS = [p for p in ALL_CONFIGS if "search" in tomllib.loads(p.read_text())]
CONFIGS = [p for p in ALL_CONFIGS if p not in SWEEPS]


def test_the_notebooks_iterations_make_781_steps() -> None:
    # The notebook: `while step * batch_size < 100000`, step from 1 -> 781 steps.
    assert Config(iters=100_000, batch_size=128).training_steps(55_000) == 781
    assert Config(iters=129, batch_size=128).training_steps(55_000) == 1
    assert Config(iters=257, batch_size=128).training_steps(55_000) == 2


def test_epochs_count_full_batches_instead_of_iters() -> None:
    # 55,000 // 128 = 429 full batches per epoch.
    assert Config(epochs=2, batch_size=128, outlier_share=0).training_steps(55_000) == 858
    assert Config(epochs=0.5, batch_size=128, outlier_share=0).training_steps(55_000) == 214
    # An epoch is a pass over the training digits: 55,000 // (128 - 32) = 572 steps.
    assert Config(epochs=1, batch_size=128, outlier_share=0.25).training_steps(55_000) == 572


def test_generated_non_digits_are_a_share_of_the_batch() -> None:
    assert config.DEFAULTS.outliers == 64 and config.DEFAULTS.digits_per_step == 192
    assert config.build(("f", {"iters": 100_000})).outliers == 16  # a short run: an eighth of 128
    assert Config(batch_size=25).outliers == 6  # rounded down
    assert Config(batch_size=3, outlier_share=0.99).digits_per_step == 1  # digits always remain
    assert config.build(("f", {"batch_size": 40, "outlier_share": 0})).outliers == 0
    with pytest.raises(config.ConfigError, match="outlier_share must be a number >= 0 and < 1"):
        config.build(("f", {"outlier_share": 1}))


def test_flags_beat_the_file_and_the_file_beats_the_defaults() -> None:
    cfg = config.build(("file", {"lr": 0.001, "schedule": "constant"}), ("flags", {"lr": 0.005}))
    assert cfg.lr == 0.005
    assert cfg.schedule == "constant"
    assert cfg.batch_size == config.DEFAULTS.batch_size


def test_an_unknown_key_is_named_with_a_suggestion() -> None:
    with pytest.raises(ConfigError, match=r"my.toml: unknown key 'lrr' \(did you mean 'lr'\?\)"):
        config.build(("my.toml", {"lrr": 0.1}))


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        ("lr", -1.0, "> 0"),
        ("lr", float("nan"), "> 0"),
        ("batch_size", 0, ">= 1"),
        ("batch_size", 12.5, "an integer"),
        ("batch_size", True, "an integer"),
        ("device", "tpu", "one of auto, cpu, cuda, mps"),
        ("schedule", "linear", "one of constant, onecycle, cosine"),
        ("bidirectional", 1, "true or false"),
        ("hidden_size", "128", "an integer"),
        ("dropout", 1.0, "< 1"),
    ],
)
def test_a_bad_value_names_its_key_and_the_allowed_values(key: str, value: object, allowed: str) -> None:
    with pytest.raises(ConfigError) as e:
        config.build(("file.toml", {key: value}))
    assert key in str(e.value)
    assert allowed in str(e.value)


def test_an_int_is_accepted_for_a_float_field() -> None:
    assert config.build(("f", {"lr": 1})).lr == 1.0


def test_iters_below_one_batch_is_rejected() -> None:
    with pytest.raises(ConfigError, match="runs no step"):
        config.build(("f", {"iters": 100, "batch_size": 128}))


def test_a_config_survives_a_toml_round_trip(tmp_path: Path) -> None:
    cfg = Config(lr=0.003, schedule="cosine", init="tf", bidirectional=True, cell="gru")
    path = tmp_path / "c.toml"
    path.write_text(config.to_toml(cfg))
    assert config.build(("c.toml", config.read_toml(path))) == cfg
    # Every field is written, each with its documentation as a comment.
    text = path.read_text()
    for f in fields(Config):
        assert f"\n{f.name} = " in text
        assert f"# {f.metadata['help']}" in text


def test_every_field_is_documented_with_its_allowed_values() -> None:
    for f in fields(Config):
        assert f.metadata["help"], f.name
        kind = config.FIELD_TYPES[f.name]
        assert kind in (int, float, bool) or config.choices(f.name), f"{f.name}: free strings are not validated"
        config.check_value(f.name, f.default)  # the defaults pass their own checks


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lr = ", "not valid TOML"),
        ("[model]\nhidden_size = 3", "tables are not used"),
        ("lr = 'fast'", "lr must be a number"),
    ],
)
def test_a_bad_config_file_is_refused_saying_why(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        config.build((str(path), config.read_toml(path)))


def test_a_missing_config_file_is_refused() -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        config.read_toml("/nonexistent/x.toml")


def test_seed_config_is_the_notebook() -> None:
    seed = config.build(("seed.toml", config.read_toml(Path(__file__).parent.parent / "configs" / "seed.toml")))
    assert (seed.cell, seed.mode, seed.hidden_size, seed.layers) == ("lstm", "rows", 128, 1)
    assert (seed.init, seed.forget_bias) == ("tf", 1.0)
    assert (seed.optimizer, seed.lr, seed.schedule, seed.weight_decay) == ("adam", 0.001, "constant", 0.0)
    assert seed.beta2 == 0.999  # TF1's AdamOptimizer
    assert (seed.batch_size, seed.iters, seed.epochs, seed.log_every) == (128, 100_000, 0.0, 10)
    assert seed.precision == "fp32"
    assert (seed.augment, seed.grad_clip, seed.label_smoothing, seed.dropout) == (False, 0.0, 0.0, 0.0)
    assert seed.training_steps(55_000) == 781
    assert seed.val_size == 5000  # TF's read_data_sets held out the first 5,000 training images


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_training_config_file_loads_and_trains(path: Path, tiny_data: Path, tmp_path: Path) -> None:
    values = tomllib.loads(path.read_text())
    assert values, f"{path.name} sets nothing"
    cfg = config.build((path.name, values))
    # Two steps of the file's own recipe on tiny data, through the real CLI.
    iters = str(2 * cfg.batch_size + 1)
    args = ["train", "--config", str(path), "--iters", iters, "--val-size", "100", "--device", "cpu"]
    if cfg.mode != "rows":  # 784-step recipes: the file's own settings, on a network small enough for a test
        args += ["--hidden-size", "8"]
    args += ["--data-dir", str(tiny_data), "--out", str(tmp_path / "run"), "--json"]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["steps"] == 2


def test_model_config_is_the_part_a_checkpoint_needs() -> None:
    cfg = Config(hidden_size=64, lr=0.003, cell="gru")
    assert cfg.model == config.ModelConfig(hidden_size=64, cell="gru")
    assert "lr" not in {f.name for f in fields(config.ModelConfig)}
    assert set(config.MODEL_FIELDS) < set(config.CONFIG_FIELDS)  # flat for users: one namespace


def test_stored_config_sets_aside_bad_training_values_but_not_model_values() -> None:
    cfg, notes = config.from_stored({"lr": -1, "hidden_size": 32, "from_the_future": 1})
    assert cfg.hidden_size == 32 and cfg.lr == config.DEFAULTS.lr
    assert any("lr must be" in n for n in notes) and any("from_the_future" in n for n in notes)
    with pytest.raises(ConfigError, match="hidden_size"):
        config.from_stored({"hidden_size": -3})


@pytest.mark.parametrize("path", SWEEPS, ids=[p.name for p in SWEEPS])
def test_sweep_files_are_valid_search_spaces(path: Path) -> None:
    from rnnmnist.experiments.sweep import read_space

    space = read_space(path)
    assert space.params, f"{path.name} searches nothing"
    config.build((path.name, space.fixed))  # the settings every trial shares are a valid config


def test_a_stored_config_from_before_beta2_existed_reads_as_what_it_trained_with() -> None:
    stored = config.DEFAULTS.to_dict()
    del stored["beta2"]  # written by a version whose Adam always used torch's 0.999
    cfg, notes = config.from_stored(stored)
    assert cfg.beta2 == 0.999 and not notes
    assert config.from_stored(config.DEFAULTS.to_dict())[0].beta2 == config.DEFAULTS.beta2 == 0.99


def test_beta2_out_of_range_is_refused_naming_it() -> None:
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(config.ConfigError, match="beta2"):
            config.from_dict({"beta2": bad})


# --- the recipe for short runs: a length below 204,800 examples, given in iters, takes the SHORT_RUN fields


def test_a_short_run_takes_smaller_batches_of_a_wider_lstm() -> None:
    cfg = config.build(("command line", {"iters": 100_000}))
    assert (cfg.batch_size, cfg.hidden_size) == (128, 96)
    assert cfg.training_steps(55_000) == 781  # the notebook's steps, not 390 of 256
    assert config.build(("f", {"iters": config.SHORT_RUN_EXAMPLES - 1})).batch_size == 128
    # Everything else is the default recipe.
    assert cfg == config.replace(config.DEFAULTS, iters=100_000, batch_size=128, hidden_size=96, outlier_share=0.125)


@pytest.mark.parametrize(
    "values",
    [{}, {"iters": 210_000}, {"iters": config.SHORT_RUN_EXAMPLES}, {"iters": 1_000_000}, {"epochs": 1.0}],
    ids=["default", "210k", "threshold", "1M", "epochs"],
)
def test_the_default_length_and_longer_runs_keep_the_defaults(values: dict) -> None:
    cfg = config.build(("f", values))
    assert (cfg.batch_size, cfg.hidden_size) == (config.DEFAULTS.batch_size, config.DEFAULTS.hidden_size)


def test_a_value_that_a_source_sets_always_wins_over_the_short_run_recipe() -> None:
    # Even where it equals the default: setting it is the user's choice.
    cfg = config.build(("f", {"batch_size": 256}), ("flags", {"iters": 100_000}))
    assert (cfg.batch_size, cfg.hidden_size) == (256, 96)
    cfg = config.build(("environment", {"iters": 100_000, "hidden_size": 64}))
    assert (cfg.batch_size, cfg.hidden_size) == (128, 64)
    # The 784-step modes were not measured with it: they keep the defaults.
    pixels = config.build(("f", {"iters": 100_000, "mode": "pixels"}))
    assert (pixels.batch_size, pixels.hidden_size) == (256, 64)


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=[p.name for p in ALL_CONFIGS])
def test_every_preset_resolves_to_its_own_values_over_the_defaults(path: Path) -> None:
    """The short-run recipe changes no preset: each sets its length and batch, or trains for epochs."""
    values = tomllib.loads(path.read_text())
    plain = {k: config.check_value(k, v) for k, v in values.items() if not isinstance(v, dict)}
    # A sweep's trial sets each searched key too (here: to the default's value).
    trial = {k: getattr(config.DEFAULTS, k) for k in values.get("search", {})}
    cfg = config.build((path.name, plain), ("trial", trial))
    assert cfg == config.replace(config.DEFAULTS, **plain, **trial)


def test_the_resolved_short_run_is_printed_trained_and_stored(tiny_data: Path, tmp_path: Path) -> None:
    printed = invoke("train", "--iters", "100000", "--print-config")
    assert printed.exit_code == 0, printed.output
    assert "\nbatch_size = 128\n" in printed.stdout and "\nhidden_size = 96\n" in printed.stdout
    explicit = invoke("train", "--iters", "100000", "--batch-size", "256", "--print-config")
    assert "\nbatch_size = 256\n" in explicit.stdout

    from rnnmnist.training import checkpoint

    out = tmp_path / "run"
    args = ["train", "--data-dir", str(tiny_data), "--out", str(out), "--val-size", "100", "--iters", "257"]
    result = invoke(*args, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "LSTM 96" in result.output and "2 steps of 128" in result.output  # the header says what trains
    stored = checkpoint.load(out / "checkpoint.pt").config
    assert (stored.batch_size, stored.hidden_size) == (128, 96)
    assert "\nbatch_size = 128\n" in (out / "config.toml").read_text()  # rerunning it trains the same


def test_a_flag_wins_over_the_environment_and_both_lengths_together_are_refused() -> None:
    env = {"RNNMNIST_TRAIN_ITERS": "1000"}
    result = invoke("train", "--print-config", "--epochs", "1", env=env)
    assert result.exit_code == 0, result.output
    assert "\nepochs = 1.0\n" in result.output
    both = invoke("train", "--print-config", "--epochs", "1", "--iters", "500", env=env)
    assert both.exit_code == 2 and "not both" in both.output
