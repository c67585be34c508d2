"""rnnmnist as a package: presets by name from any folder, missing extras in one line, the wheel's contents.

The whole story (a wheel in a fresh venv, trained and used from an unrelated folder) is
.ci/wheel-smoke.sh, which CI runs; these are the parts that are quick.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from clitools import invoke

from rnnmnist import __version__, presets

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
TRAIN_PRESETS = ("best", "handwriting", "permuted", "pixels", "seed")


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder with no configs/ in it, as a user's would be."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


# --- the presets


def test_the_presets_are_the_files_of_configs() -> None:
    found = presets.available()
    assert [p.name for p in found] == sorted(p.stem for p in CONFIGS.glob("*.toml"))
    assert {*TRAIN_PRESETS, "sweep-rows"} <= {p.name for p in found}
    for p in found:
        assert p.path.read_bytes() == (CONFIGS / f"{p.name}.toml").read_bytes()
        # The first comment line is what `rnnmnist presets` shows: one short sentence.
        assert p.summary and len(p.summary) <= 105 and p.summary.endswith("."), (p.name, p.summary)
        is_sweep = "search" in tomllib.loads(p.path.read_text(encoding="utf-8"))
        assert p.kind == ("sweep" if is_sweep else "train")


def test_presets_lists_one_line_each_and_json(elsewhere: Path) -> None:
    result = invoke("presets")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert [line.split()[0] for line in lines] == [p.name for p in presets.available()]
    assert any(line.split()[:2] == ["sweep-rows", "sweep"] for line in lines)
    assert any(line.split()[:2] == ["seed", "train"] and "TensorFlow 1 notebook" in line for line in lines)
    listed = json.loads(invoke("presets", "--json").output)["presets"]
    assert {p["name"]: p["kind"] for p in listed}["sweep-rows"] == "sweep"
    assert all(Path(p["path"]).is_file() and p["summary"] for p in listed)


def test_presets_name_prints_its_toml(elsewhere: Path) -> None:
    result = invoke("presets", "seed")
    assert result.exit_code == 0
    assert result.output == (CONFIGS / "seed.toml").read_text(encoding="utf-8")
    result = invoke("presets", "sede")
    assert result.exit_code == 2 and "did you mean 'seed'?" in result.output


@pytest.mark.parametrize("name", TRAIN_PRESETS)
def test_every_training_preset_resolves_by_name_from_any_folder(name: str, elsewhere: Path) -> None:
    result = invoke("train", "--config", name, "--print-config")
    assert result.exit_code == 0, result.output
    resolved = tomllib.loads(result.output)
    for key, value in tomllib.loads((CONFIGS / f"{name}.toml").read_text(encoding="utf-8")).items():
        if key not in ("iters", "epochs"):  # one length: the resolved config may state it the other way
            assert resolved[key] == value, (name, key)


def test_flags_override_a_preset(elsewhere: Path) -> None:
    result = invoke("train", "--config", "seed", "--lr", "0.002", "--print-config")
    assert result.exit_code == 0
    assert tomllib.loads(result.output)["lr"] == 0.002 and tomllib.loads(result.output)["init"] == "tf"


def test_an_unknown_preset_is_one_line_with_the_closest_name(elsewhere: Path) -> None:
    result = invoke("train", "--config", "sed")
    assert result.exit_code == 2
    assert result.output.count("\n") == 1
    assert "no preset 'sed' (did you mean 'seed'?); presets: best, fast99, handwriting, " in result.output


def test_the_old_path_from_another_folder_names_the_preset(elsewhere: Path) -> None:
    result = invoke("train", "--config", "configs/seed.toml")
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert "file configs/seed.toml does not exist (the preset of that name is --config seed)" in result.output


def test_a_path_still_works_and_a_file_without_toml_too(elsewhere: Path) -> None:
    (elsewhere / "mine.toml").write_text("hidden_size = 24\n")
    (elsewhere / "plain").write_text("hidden_size = 40\n")
    sub = elsewhere / "sub"
    sub.mkdir()
    (sub / "seed.toml").write_text("hidden_size = 48\n")  # a path, not the preset, though named alike
    for value, hidden in (("mine.toml", 24), ("plain", 40), ("sub/seed.toml", 48), (str(sub / "seed.toml"), 48)):
        result = invoke("train", "--config", value, "--print-config")
        assert result.exit_code == 0, result.output
        assert tomllib.loads(result.output)["hidden_size"] == hidden
    result = invoke("train", "--config", "sub")
    assert result.exit_code == 2 and "no preset 'sub'" in result.output


def test_a_preset_of_the_other_kind_says_which_command_takes_it(elsewhere: Path) -> None:
    result = invoke("train", "--config", "sweep-rows")
    assert result.exit_code == 2
    assert "preset 'sweep-rows' is a sweep space: use it with rnnmnist sweep --config sweep-rows" in result.output
    result = invoke("sweep", "--config", "seed", "--trials", "1")
    assert result.exit_code == 2
    assert "preset 'seed' is a training config: use it with rnnmnist train --config seed" in result.output


def test_the_sweep_space_resolves_by_name(elsewhere: Path) -> None:
    from rnnmnist.experiments.sweep import read_space

    space = read_space(presets.resolve("sweep-rows", "sweep"))
    assert {p.name for p in space.params} == {"lr", "hidden_size"}


def test_the_environment_can_name_a_preset(elsewhere: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RNNMNIST_TRAIN_CONFIG_FILE", "seed")  # click names it by the parameter
    result = invoke("train", "--print-config")
    assert result.exit_code == 0 and tomllib.loads(result.output)["init"] == "tf"


# --- extras


BLOCKED = ("fastapi", "optuna", "matplotlib", "onnx", "tensorboard")


def test_each_missing_extra_ends_in_one_line_naming_its_pip_install(tiny_data: Path, tmp_path: Path) -> None:
    """A real process in which the optional packages cannot be imported (as where they are not installed)."""
    model_dir = tmp_path / "run"
    space = tmp_path / "space.toml"
    space.write_text("iters = 1000\n[search]\nlr = [0.01, 0.003]\n")
    cases = {
        "serve": ["serve", str(model_dir / "checkpoint.pt")],
        "sweep": ["sweep", "--config", str(space), "--trials", "1", "--out", str(tmp_path / "sw")],
        "plots": ["plot", str(model_dir)],
        "onnx": ["export", str(model_dir / "checkpoint.pt"), "--format", "onnx", "--data-dir", str(tiny_data)],
        "tensorboard": ["train", "--tensorboard", "--out", str(tmp_path / "tb")],
    }
    what = {
        "serve": "rnnmnist serve",
        "sweep": "rnnmnist sweep",
        "plots": "rnnmnist plot",
        "onnx": "rnnmnist export --format onnx",
        "tensorboard": "rnnmnist train --tensorboard",
    }
    code = (
        "import json, subprocess, sys\n"
        f"for name in {BLOCKED!r}:\n"
        "    sys.modules[name] = None  # import NAME now raises ModuleNotFoundError\n"
        "from click.testing import CliRunner\n"
        "from rnnmnist.cli.main import cli\n"
        "from rnnmnist.training.synthetic import tiny_train_args\n"
        "data, run, cases = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])\n"
        "made = CliRunner().invoke(cli, tiny_train_args(data, run, '--iters', '26', '--precision', 'fp32'))\n"
        "assert made.exit_code == 0, made.output\n"
        "out = {}\n"
        "for extra, args in cases.items():\n"
        "    r = CliRunner().invoke(cli, args, prog_name='rnnmnist')\n"
        "    out[extra] = [r.exit_code, r.output]\n"
        "print(json.dumps(out))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tiny_data), str(model_dir), json.dumps(cases)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT), "RNNMNIST_DATA_DIR": str(tiny_data)},
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout.splitlines()[-1])
    for extra, (exit_code, output) in results.items():
        assert (exit_code, output) == (
            1,
            f"Error: {what[extra]} needs the {extra} extra: pip install 'rnnmnist[{extra}]'\n",
        ), extra


def test_a_postgresql_storage_without_its_driver_names_the_postgres_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("optuna", reason="the sweep extra is not installed")
    monkeypatch.setitem(sys.modules, "psycopg2", None)  # import psycopg2 now raises ModuleNotFoundError
    space = tmp_path / "space.toml"
    space.write_text("iters = 1000\n[search]\nlr = [0.01, 0.003]\n")
    url = "postgresql://rnnmnist:secret@127.0.0.1:9/rnnmnist"
    result = invoke("sweep", "--config", str(space), "--trials", "1", "--out", str(tmp_path / "o"), "--storage", url)
    assert result.exit_code == 1
    assert result.output.endswith(" needs the postgres extra: pip install 'rnnmnist[postgres]'\n")
    assert result.output.startswith("Error: --storage postgresql://") and "secret" not in result.output


def test_the_old_extra_names_still_install_the_same() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]
    assert extras["plot"] == ["rnnmnist[plots]"] and extras["export"] == ["rnnmnist[onnx]"]
    (everything,) = extras["all"]
    assert everything.startswith("rnnmnist[") and everything.endswith("]")
    assert set(everything[9:-1].split(",")) == {"serve", "sweep", "onnx", "plots", "tensorboard", "postgres"}
    core = {d.split(">")[0].split("=")[0] for d in project["dependencies"]}
    assert core == {"torch", "torchvision", "click", "rich", "pillow", "numpy"}


# --- the wheel


def test_the_wheel_carries_the_presets_and_the_serve_page(tmp_path: Path) -> None:
    """Built with the standard frontend from a copy of the sources (the build leaves build/ and egg-info
    behind it), without isolation: this venv's setuptools, no index needed; a few seconds."""
    pytest.importorskip("build", reason="the dev extra's `build` is not installed")
    source = tmp_path / "source"
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("rnnmnist", "configs"):
        shutil.copytree(ROOT / name, source / name, ignore=skip)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    done = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path), str(source)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (wheel,) = tmp_path.glob("rnnmnist-*.whl")
    assert wheel.name == f"rnnmnist-{__version__}-py3-none-any.whl"
    names = set(zipfile.ZipFile(wheel).namelist())
    for preset in CONFIGS.glob("*.toml"):
        assert f"rnnmnist/configs/{preset.name}" in names
    for static in (ROOT / "rnnmnist" / "static").iterdir():
        assert f"rnnmnist/static/{static.name}" in names
    assert "rnnmnist/presets.py" in names and "rnnmnist/commands/presets.py" in names
    assert not [n for n in names if n.startswith(("tests/", "configs/", "bench/"))]
