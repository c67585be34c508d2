"""Every float option of every command refuses NaN and infinities (click's FloatRange lets NaN through)."""

from __future__ import annotations

from collections.abc import Iterator

import click
import pytest
from click.testing import CliRunner

from rnnmnist.cli.main import cli


def _float_options(command: click.Command, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], str]]:
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from _float_options(sub, (*path, name))
        return
    for param in command.params:
        if isinstance(param, click.Option) and isinstance(param.type, click.types.FloatParamType):
            yield path, max(param.opts, key=len)


FLOAT_OPTIONS = sorted(_float_options(cli))


def test_the_walk_finds_the_float_options() -> None:
    found = {(path[0], option) for path, option in FLOAT_OPTIONS}
    assert {("predict", "--min-confidence"), ("eval", "--min-accuracy"), ("train", "--lr")} <= found


@pytest.mark.parametrize("word", ["nan", "NaN", "-nan", "inf", "-inf", "Infinity"])
@pytest.mark.parametrize(("path", "option"), FLOAT_OPTIONS, ids=lambda v: " ".join(v) if isinstance(v, tuple) else v)
def test_every_float_option_refuses_non_finite_numbers(path: tuple[str, ...], option: str, word: str) -> None:
    # The option comes first on the command line, so click checks it first, before any missing argument.
    result = CliRunner().invoke(cli, [*path, option, word])
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}'" in result.output, result.output
    assert "Traceback" not in result.output


def test_finite_float_keeps_its_range() -> None:
    from rnnmnist.cli.options import FiniteFloat

    kind = FiniteFloat(0, 1)
    assert kind.convert("0.25", None, None) == 0.25
    for word in ("nan", "2", "-0.5"):
        with pytest.raises(click.BadParameter):
            kind.convert(word, None, None)
    assert FiniteFloat().convert("-1e300", None, None) == -1e300


def test_an_unbounded_float_shows_no_range_in_the_help() -> None:
    help_text = CliRunner().invoke(cli, ["train", "--help"]).output
    assert "--dropout FLOAT" in help_text and "None" not in help_text
