"""The package's shape: imports run one way down its layers, no cycle, short functions and classes,
no broad ``except`` outside the documented boundaries, and a presentation layer that needs no torch.

These read the source with :mod:`ast`; nothing here imports the modules it checks, except the last
tests, which import the torch-free modules in a fresh interpreter and look at ``sys.modules``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "rnnmnist"
MAX_FUNCTION_LINES = 60
MAX_CLASS_LINES = 160

# The presentation layer: what prints, and it loads no torch (tested below).
PRESENTATION = (
    "rnnmnist.cli.textfit",
    "rnnmnist.cli.cells",
    "rnnmnist.cli.render_train",
    "rnnmnist.cli.render_eval",
    "rnnmnist.cli.render_predict",
    "rnnmnist.cli.render_experiments",
    "rnnmnist.cli.ui",
)

# The ground floor: what every layer may use; it loads no torch either.
GROUND = (
    "rnnmnist.errors",
    "rnnmnist.config",
    "rnnmnist.files",
    "rnnmnist.jsonout",
    "rnnmnist.machine",
    "rnnmnist.extras",
    "rnnmnist.signals",
    "rnnmnist.process",
    "rnnmnist.internals",
    "rnnmnist.presets",
)

# Lowest first: a module may import its own layer and those below, never one above.
LAYERS: list[tuple[str, ...]] = [
    ("rnnmnist", *GROUND),
    ("rnnmnist.training",),
    ("rnnmnist.images",),
    ("rnnmnist.experiments", "rnnmnist.serving", "rnnmnist.plot", "rnnmnist.export"),
    (*PRESENTATION, "rnnmnist.cli.options", "rnnmnist.cli.ranks"),
    ("rnnmnist.commands",),
    ("rnnmnist.cli.main", "rnnmnist.__main__"),
]

# The presentation layer and the ground floor load without torch (``rnnmnist --help`` too).
TORCH_FREE = [*GROUND, *PRESENTATION, "rnnmnist.cli.options", "rnnmnist.training.events"]


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its ``__init__``'s)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that ``path`` imports anywhere in it (functions' lazy imports too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                full = f"{node.module}.{a.name}"
                found.add(full if full in known else node.module)
    return {m for m in found if m in known}


def layer(module: str) -> int:
    best, index = -1, -1
    for i, names in enumerate(LAYERS):
        for prefix in names:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, index = len(prefix), i
    assert index >= 0, f"{module} is in no layer: add it to LAYERS"
    return index


def test_imports_run_down_the_layers() -> None:
    known = modules()
    upward = [
        f"{m} (layer {layer(m)}) imports {d} (layer {layer(d)})"
        for m, path in known.items()
        for d in sorted(imports(path, known))
        if layer(d) > layer(m)
    ]
    assert not upward, "\n".join(upward)


def test_no_import_cycle() -> None:
    known = modules()
    graph = {m: imports(p, known) - {m, "rnnmnist"} for m, p in known.items()}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycles.append([*stack[stack.index(d) :], d])
            elif d not in state:
                visit(d, [*stack, d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def _definitions() -> list[tuple[str, int, Path, int]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                limit = MAX_CLASS_LINES if isinstance(node, ast.ClassDef) else MAX_FUNCTION_LINES
                lines = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if lines > limit:
                    found.append((node.name, lines, path, node.lineno))
    return found


def test_no_function_over_60_lines_and_no_class_over_160() -> None:
    too_long = [f"{p.relative_to(ROOT)}:{line} {name}: {n} lines" for name, n, p, line in _definitions()]
    assert not too_long, "\n".join(too_long)


BROAD = {"Exception", "BaseException"}


def _reraises(handler: ast.ExceptHandler) -> bool:
    """A handler that cleans up and lets the exception go on (a bare ``raise`` as its last statement)."""
    last = handler.body[-1]
    return isinstance(last, ast.Raise) and last.exc is None


def test_broad_excepts_reraise_or_are_documented_boundaries() -> None:
    """``except Exception`` swallows only where a comment on its line says ``boundary:`` and why."""
    swallowed = []
    for path in sorted(PACKAGE.rglob("*.py")):
        lines = path.read_text(encoding="utf-8").splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(node, ast.ExceptHandler):
                continue
            names = node.type.elts if isinstance(node.type, ast.Tuple) else [node.type]
            broad = node.type is None or any(isinstance(n, ast.Name) and n.id in BROAD for n in names)
            if broad and not _reraises(node) and "boundary:" not in lines[node.lineno - 1]:
                swallowed.append(f"{path.relative_to(ROOT)}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    assert not swallowed, "\n".join(swallowed)


@pytest.mark.parametrize("module", TORCH_FREE)
def test_presentation_and_ground_floor_import_no_torch(module: str) -> None:
    code = f"import sys, {module}; print(sorted(m for m in ('torch', 'torchvision') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"importing {module} loads {out.strip()}"


def test_inference_does_not_import_the_cli_input_machinery() -> None:
    known = modules()
    assert "rnnmnist.images.inputs" not in imports(known["rnnmnist.images.predict"], known)
