"""``rnnmnist presets``: the packaged configs that ``--config NAME`` reads, and the option type that finds them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

EXAMPLES = """\b
Examples:
  rnnmnist presets                    # one line each: name, kind, what it is for
  rnnmnist presets seed               # the preset's TOML, e.g. to start a config of your own:
  rnnmnist presets best > my.toml && rnnmnist train --config my.toml
  rnnmnist presets --json
"""


class ConfigFile(click.ParamType):
    """A ``--config`` value: a preset's name (``seed``) or a TOML file's path; converts to the file's Path."""

    name = "NAME|FILE"

    def __init__(self, kind: str) -> None:
        self.kind = kind  # "train" or "sweep": the kind of preset this option takes

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Path:
        if isinstance(value, Path):
            return value
        from rnnmnist.presets import PresetError, resolve

        try:
            return resolve(str(value), self.kind)  # type: ignore[arg-type]
        except PresetError as e:
            self.fail(str(e), param, ctx)


@click.command(epilog=EXAMPLES)
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the presets as JSON on stdout.")
def presets(name: str | None, as_json: bool) -> None:
    """List the presets that --config NAME reads (rnnmnist train --config seed), or print NAME's TOML.

    Training configs go to rnnmnist train --config, sweep spaces to rnnmnist
    sweep --config. Flags given with --config override its settings.
    """
    from rnnmnist import presets as library
    from rnnmnist.cli.ui import Ui

    ui = Ui(json_mode=as_json)
    if name is not None:
        preset = library.find(name)
        if as_json:
            ui.emit_json({**preset.to_json(), "toml": preset.path.read_text(encoding="utf-8")})
        else:
            ui.line(preset.path.read_text(encoding="utf-8").removesuffix("\n"))
        return
    found = library.available()
    if as_json:
        ui.emit_json({"presets": [p.to_json() for p in found]})
        return
    width = max((len(p.name) for p in found), default=0)
    for p in found:
        ui.line(f"{p.name:<{width}}  {p.kind:<5}  {p.summary}")
