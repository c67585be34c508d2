"""The documentation: its examples run, its links resolve, its generated references are complete.

How the examples run (tiny data, short training, a fork server for speed): tests/docexamples.py.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import click
import pytest
from docexamples import ROOT, Page, commands, pages, parse, script, write_shims
from docexamples import environment as examples_environment

from rnnmnist.cli.main import cli
from rnnmnist.config import CONFIG_FIELDS
from rnnmnist.errors import BadValueError, ExitCode, RnnmnistError
from rnnmnist.signals import NAMES

PAGES = [parse(path) for path in pages()]
PAGE_TIMEOUT_S = 180


def _hooks() -> ModuleType:
    """docs_gen/hooks.py, the mkdocs hook that generates the references, loaded as mkdocs loads it."""
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs_gen" / "hooks.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- the examples


@pytest.fixture(scope="module")
def fork_server() -> Iterator[Path]:
    """A process that has imported torch and rnnmnist once and forks a child per example command."""
    folder = Path(tempfile.mkdtemp(prefix="rnnmnist-examples-"))  # short: a socket path has ~100 bytes
    sock = folder / "server.sock"
    server = subprocess.Popen(
        [sys.executable, str(Path(__file__).parent / "docexamples.py"), str(sock)],
        cwd=folder,
        stdout=subprocess.PIPE,
        start_new_session=True,  # its workers and commands share its process group: one kill ends them all
    )
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == b"ready", "the examples' fork server did not start"
        yield sock
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
        shutil.rmtree(folder, ignore_errors=True)


def _failure(page: Page, status: str, log: str) -> str:
    """The failed command named by page, block and line, with its expected and actual exit codes."""
    words = status.split()
    if words[0] == "timeout":
        head = f"{page.path}: still running after {words[2]} s; the last command shown below did not finish"
    elif words[0] == "exit":  # the shell itself ended (an `exit` in an example, or a bash error)
        at, rc = words[1], words[2]
        head = f"{page.path}: the shell ended with exit code {rc} at block:line {at}; later commands did not run"
    else:
        block, line, statuses = int(words[0]), int(words[1]), words[2:]
        found = [(c, e) for b in page.runnable if b.lang == "bash" for n, c, e in commands(b) if n == line]
        command, expected = found[0] if found else ("(the python block)", 0)
        head = (
            f"{page.path}, block at line {block}, command at line {line}:\n    {command}\n"
            f"exit status {' | '.join(statuses)}, expected {expected} (each command of a pipe but the last "
            f"must exit 0; a trailing '# exits N' comment sets what the last one must exit with)"
        )
    return f"{head}\n--- the page's output (last 4000 characters) ---\n{log[-4000:]}"


@pytest.mark.parametrize("page", [p for p in PAGES if p.runnable], ids=lambda p: p.path)
def test_examples_run(page: Page, tiny_data: Path, fork_server: Path, tmp_path: Path) -> None:
    """Every bash and python block of the page runs, in order, in one folder, and exits as it says."""
    work, helpers, bin_dir = tmp_path / "work", tmp_path / "helpers", tmp_path / "bin"
    shutil.copytree(ROOT / "examples", work / "examples")
    helpers.mkdir()
    write_shims(bin_dir)
    status = helpers / "status"
    (helpers / "page.sh").write_text(script(page, tiny_data, helpers), encoding="utf-8")
    env = examples_environment(tiny_data, bin_dir, fork_server, status)
    start = time.perf_counter()
    with open(helpers / "log", "wb") as log_file:
        bash = subprocess.Popen(
            ["bash", str(helpers / "page.sh")],
            cwd=work,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
        )
        try:
            bash.wait(timeout=PAGE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            bash.kill()
            bash.wait()
            status.write_text(f"timeout ? {PAGE_TIMEOUT_S}")
    log = (helpers / "log").read_text(errors="replace")
    result = status.read_text().strip() if status.exists() else f"exit ? {bash.returncode}"
    assert result == "done", _failure(page, result, log)
    print(f"{page.path}: {len(page.runnable)} blocks in {time.perf_counter() - start:.1f} s")


def test_examples_are_marked_well() -> None:
    """Every not-run marker says why and stands right before a block that would run; no ```sh blocks."""
    problems = [problem for page in PAGES for problem in page.problems]
    problems += [f"{b.where}: a not-run marker without a reason" for p in PAGES for b in p.blocks if b.not_run == ""]
    assert not problems, "\n".join(problems)


def test_examples_are_found() -> None:
    """The collector sees the pages' blocks (a parser that found nothing would pass every page)."""
    readme = next(p for p in PAGES if p.path == "README.md")
    fences = sum(line.lstrip().startswith("```bash") for line in (ROOT / "README.md").read_text().splitlines())
    assert len([b for b in readme.blocks if b.lang == "bash"]) == fences > 0


LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def test_readme_links_resolve() -> None:
    """README.md's relative links and images point to files of the repository (mkdocs --strict checks the site's)."""
    broken = []
    for target in LINK.findall((ROOT / "README.md").read_text(encoding="utf-8")):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL or an anchor of the README itself
        if not (ROOT / target.split("#")[0]).exists():
            broken.append(target)
    assert not broken, f"README.md links to files that do not exist: {broken}"


def test_readme_is_short() -> None:
    """README.md says what rnnmnist is and how to start; the rest is the site's (docs/)."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move material into docs/ (at most 200)"


# --- the generated references


def _commands(command: click.Command, ctx: click.Context) -> Iterator[tuple[click.Context, click.Command]]:
    yield ctx, command
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                yield from _commands(sub, click.Context(sub, info_name=name, parent=ctx))


def test_cli_reference_lists_every_command_and_option() -> None:
    text = _hooks().cli_reference()
    found = list(_commands(cli, click.Context(cli, info_name="rnnmnist")))
    assert len(found) >= 10  # rnnmnist, train, eval, predict, ...
    for ctx, command in found:
        assert f"`{ctx.command_path}`" in text, f"the CLI reference lacks {ctx.command_path}"
        for param in command.get_params(ctx):
            if isinstance(param, click.Option) and not param.hidden:
                for opt in param.opts:
                    assert f"`{opt}" in text or f" {opt}" in text, f"{ctx.command_path}: {opt} not in the reference"
    page = (ROOT / "docs" / "reference" / "cli.md").read_text()
    assert "<!-- generated: cli-reference -->" in page and "<!-- generated: exit-codes -->" in page


def test_config_reference_lists_every_field() -> None:
    text = _hooks().config_reference()
    for name, f in CONFIG_FIELDS.items():
        assert f'<span id="{name}"></span>`{name}`' in text, f"the configuration reference lacks {name}"
        assert " ".join(f.metadata["help"].split()) in text.replace("\\|", "|")
    assert "<!-- generated: config-reference -->" in (ROOT / "docs" / "reference" / "config.md").read_text()


def test_presets_table_lists_every_preset() -> None:
    from rnnmnist.presets import available

    text = _hooks().presets()
    assert len(available()) >= 7  # seed, best, fast99, handwriting, pixels, permuted, sweep-rows
    for preset in available():
        assert f"| `{preset.name}` |" in text and preset.summary in text


def test_exit_code_table_is_the_codes_the_program_uses() -> None:
    """ExitCode (rendered in the CLI reference) holds exactly the codes the CLI ends with."""
    from rnnmnist.commands.predict import STRICT_EXIT

    used = {0, RnnmnistError.exit_code, BadValueError.exit_code, click.UsageError.exit_code, STRICT_EXIT}
    used |= {128 + int(signum) for signum in NAMES}
    assert set(ExitCode) == used


def test_module_map_describes_every_module() -> None:
    """The architecture page's module map is generated; every module gives it a docstring to show."""
    hooks = _hooks()
    missing = [
        p.relative_to(ROOT).as_posix()
        for folder in hooks.package_folders()
        for p in folder.glob("*.py")
        if hooks.summary(p) is None
    ]
    assert not missing, f"modules without a docstring (the module map shows its first paragraph): {missing}"
    assert "`rnnmnist/commands/`" in hooks.module_map()
    assert "<!-- generated: module-map -->" in (ROOT / "docs" / "architecture.md").read_text()
