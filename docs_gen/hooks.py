"""mkdocs hooks (``hooks:`` in mkdocs.yml): the parts of the docs generated from the code at build time.

A page asks for a generated part with a line ``<!-- generated: NAME -->``; :data:`PARTS` names
what exists: the CLI reference (every command of the click group, with the help text, usage and
options ``--help`` shows), the exit codes (from :class:`rnnmnist.errors.ExitCode`), the presets
(as ``rnnmnist presets`` lists them), the configuration reference (from the field metadata of
:mod:`rnnmnist.config`) and the module map (from the package's files and their docstrings' first
paragraphs). tests/test_docs.py imports this file too.
"""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import click

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "rnnmnist"
MARKER = re.compile(r"^<!-- generated: ([a-z-]+) -->$", re.MULTILINE)


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def _config_table(dataclass: type) -> list[str]:
    from rnnmnist import config

    rows = [
        "| Key and flag | Default | Allowed values | What it sets |",
        "| --- | --- | --- | --- |",
    ]
    for f in fields(dataclass):
        if f.name in seen_in_bases(dataclass):
            continue
        flag = "--" + f.name.replace("_", "-")
        if config.FIELD_TYPES[f.name] is bool:
            flag += f" / --no-{f.name.replace('_', '-')}"
        default = config._toml_value(f.default)  # as a TOML file writes it
        allowed = config._describe_allowed(f)  # the words of the error message a bad value gets
        rows.append(
            f'| <span id="{f.name}"></span>`{f.name}`<br>`{flag}` | `{default}` | {_cell(allowed)} '
            f"| {_cell(f.metadata['help'])} |"
        )
    return rows


def seen_in_bases(dataclass: type) -> set[str]:
    """Fields a dataclass inherits (Config is ModelConfig + TrainingConfig: each field listed once)."""
    return {f.name for base in dataclass.__mro__[1:] if hasattr(base, "__dataclass_fields__") for f in fields(base)}


def config_reference() -> str:
    """Every field of the run configuration: key, flag, default, allowed values, help."""
    from rnnmnist import config

    lines = [
        "Each key below is a key of a `--config` file (TOML; a sweep file's plain settings too), a flag of",
        "`rnnmnist train`, and an environment variable `RNNMNIST_TRAIN_<KEY>` (upper case, e.g.",
        "`RNNMNIST_TRAIN_HIDDEN_SIZE=128`). Allowed values are exactly what is checked: a value outside them",
        "is rejected with a message naming the key.",
        "",
    ]
    for dataclass in (config.ModelConfig, config.TrainingConfig):
        title = "Model" if dataclass is config.ModelConfig else "Training"
        doc = (dataclass.__doc__ or "").strip().splitlines()[0]
        lines += [f"## {title}", "", doc, "", *_config_table(dataclass), ""]
    return "\n".join(lines)


def _help_markdown(text: str) -> list[str]:
    """A click help text as Markdown: plain paragraphs, and ``\\b`` paragraphs (kept as typed) as code."""
    lines: list[str] = []
    for paragraph in inspect.cleandoc(text.split("\f")[0]).split("\n\n"):
        if paragraph.startswith("\b"):
            lines += ["```text", textwrap.dedent(paragraph[1:].strip("\n")), "```", ""]
        else:
            lines += [" ".join(paragraph.split()), ""]
    return lines


def _command_docs(command: click.Command, ctx: click.Context, level: int) -> list[str]:
    lines = [f"{'#' * level} `{ctx.command_path}`", ""]
    lines += _help_markdown(command.help or command.short_help or "")
    lines += ["```text", ctx.get_usage(), "```", ""]
    rows = [param.get_help_record(ctx) for param in command.get_params(ctx) if isinstance(param, click.Option)]
    rows = [row for row in rows if row]  # hidden options have none
    if rows:
        lines += ["| Option | What it does |", "| --- | --- |"]
        lines += [f"| `{names}` | {_cell(help_text)} |" for names, help_text in rows]
        lines.append("")
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                lines += _command_docs(sub, click.Context(sub, info_name=name, parent=ctx), level + 1)
    return lines


def walk_commands() -> list[str]:
    """Every command's path (``rnnmnist``, ``rnnmnist train``, ...), as the CLI reference lists them."""
    from rnnmnist.cli.main import cli

    def walk(command: click.Command, ctx: click.Context) -> list[str]:
        paths = [ctx.command_path]
        if isinstance(command, click.Group):
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                if sub is not None and not sub.hidden:
                    paths += walk(sub, click.Context(sub, info_name=name, parent=ctx))
        return paths

    return walk(cli, click.Context(cli, info_name="rnnmnist"))


def cli_reference() -> str:
    """Every command with its help, usage and options, as ``--help`` shows them (defaults, ranges)."""
    from rnnmnist.cli.main import cli

    return "\n".join(_command_docs(cli, click.Context(cli, info_name="rnnmnist"), 2))


def presets() -> str:
    """The packaged presets, as ``rnnmnist presets`` lists them: name, kind, the file's first comment line."""
    from rnnmnist import presets as packaged

    rows = ["| Preset | Kind | What it is |", "| --- | --- | --- |"]
    kinds = {"train": "training config (`train --config NAME`)", "sweep": "sweep space (`sweep --config NAME`)"}
    rows += [f"| `{p.name}` | {kinds[p.kind]} | {_cell(p.summary)} |" for p in packaged.available()]
    return "\n".join(rows) + "\n"


def exit_codes() -> str:
    """The program's exit codes as a table."""
    from rnnmnist.errors import ExitCode

    rows = ["| Code | Name | Meaning |", "| --- | --- | --- |"]
    rows += [f"| {code.value} | `{code.name}` | {_cell(code.meaning)} |" for code in ExitCode]
    return "\n".join(rows) + "\n"


ROLE = re.compile(r":[a-z]+:`([^`]+)`")  # Sphinx roles (:func:`fit`) read as plain code in Markdown


def summary(path: Path) -> str | None:
    """The first paragraph of a Python file's module docstring as one line, None when it has none."""
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    if not doc or not doc.strip():
        return None
    return ROLE.sub(r"`\1`", " ".join(doc.strip().split("\n\n")[0].split()))


def package_folders() -> list[Path]:
    """The package's folders holding Python modules, the package itself first."""
    return sorted({p.parent for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts})


def module_map() -> str:
    """Every module of the package with its docstring's first paragraph, one table per folder."""
    lines: list[str] = []
    for folder in package_folders():
        rel = folder.relative_to(ROOT).as_posix()
        lines += [f"### `{rel}/`", "", "| Module | What it is |", "| --- | --- |"]
        for path in sorted(folder.glob("*.py")):
            lines.append(f"| `{path.name}` | {_cell(summary(path) or '(no docstring)')} |")
        lines.append("")
    others = sorted(p for p in PACKAGE.rglob("*") if p.is_file() and p.suffix != ".py" and "__pycache__" not in p.parts)
    presets = sorted((ROOT / "configs").glob("*.toml"))
    lines += ["### Data files in the package", ""]
    lines += [f"- `{p.relative_to(ROOT).as_posix()}`" for p in others]
    lines += [f"- `configs/{p.name}` (shipped as `rnnmnist/configs/{p.name}`: a preset)" for p in presets]
    lines.append("")
    return "\n".join(lines)


PARTS: dict[str, Callable[[], str]] = {
    "cli-reference": cli_reference,
    "config-reference": config_reference,
    "exit-codes": exit_codes,
    "module-map": module_map,
    "presets": presets,
}


def render(markdown: str, where: str = "page") -> str:
    """``markdown`` with each ``<!-- generated: NAME -->`` line replaced by that part."""

    def part(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in PARTS:
            raise ValueError(f"{where}: unknown generated part {name!r} (known: {', '.join(PARTS)})")
        return PARTS[name]()

    return MARKER.sub(part, markdown)


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    return render(markdown, page.file.src_uri)
