"""Property-based: any config file or flag values give a valid run configuration or a one-line error."""

from __future__ import annotations

import json
import math
import tempfile
import tomllib
from pathlib import Path

from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnmnist import config
from rnnmnist.cli.main import cli
from rnnmnist.config import CONFIG_FIELDS

KEYS = [*CONFIG_FIELDS, "lrr", "model", "", "x y", "Lr", "hidden-size"]
WORDS = ["lstm", "gru", "cpu", "cuda", "auto", "onecycle", "constant", "tf", "bf16", "fp32", "rows", "adamw"]
scalars = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.booleans(),
    st.text(max_size=12),
    st.sampled_from(WORDS),
)
values = st.one_of(scalars, st.lists(scalars, max_size=3), st.dictionaries(st.text(max_size=4), scalars, max_size=2))


def toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    assert isinstance(v, dict)
    return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(x)}" for k, x in v.items()) + "}"


def check(args: list[str]) -> None:
    result = CliRunner().invoke(cli, ["train", "--print-config", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    if result.exit_code == 0:
        config.build(("printed", tomllib.loads(result.stdout)))  # a complete, valid configuration
    else:
        assert result.exit_code == 2, (result.exit_code, result.output)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr


def check_file(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.toml"
        path.write_bytes(content)
        check(["--config", str(path)])


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(KEYS), values, max_size=6))
def test_config_files_of_any_keys_and_values_are_a_config_or_one_line(table: dict) -> None:
    check_file("\n".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in table.items()).encode())


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode)))
def test_config_files_of_any_bytes_are_a_config_or_one_line(content: bytes) -> None:
    check_file(content)


FLAGS = ["--" + name.replace("_", "-") for name in CONFIG_FIELDS] + ["--iters", "--epochs", "--config", "--bogus"]
flag_values = st.one_of(
    st.text(max_size=12), st.integers(-(10**12), 10**12).map(str), st.floats().map(str), st.sampled_from(WORDS)
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(FLAGS), flag_values), max_size=5))
def test_flags_of_any_values_are_a_config_or_one_line(pairs: list[tuple[str, str]]) -> None:
    args: list[str] = []
    for flag, value in pairs:
        if flag.startswith("--bidirectional"):
            args.append(flag)  # a switch: takes no value
        else:
            args += [flag, value]
    check(args)


def test_valid_flags_print_the_resolved_config() -> None:
    result = CliRunner().invoke(cli, ["train", "--print-config", "--lr", "0.003", "--cell", "gru"])
    assert result.exit_code == 0
    cfg = config.build(("printed", tomllib.loads(result.stdout)))
    assert (cfg.lr, cfg.cell) == (0.003, "gru")
