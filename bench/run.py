"""rnnmnist's benchmarks: one command, one table, one JSON file per run.

    make bench                                   # everything (many minutes on 2 cores)
    python bench/run.py --sections train,wall    # some sections
    python bench/run.py --tiny                   # seconds, on synthetic data: a smoke test

Machines are noisy, so throughput is quoted against a reference measured in the
same run, alternately: a minimal hand-written PyTorch loop (bench/reference_loop.py).
Results go to bench/results/<date>-<commit>.json for comparison across commits.
Needs the real MNIST in --data-dir / RNNMNIST_DATA_DIR (except --tiny).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import gemm_floor  # noqa: E402
import handwriting  # noqa: E402
import numpy as np  # noqa: E402
import reference_loop  # noqa: E402
import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from rnnmnist import config  # noqa: E402
from rnnmnist.process import tune_allocator  # noqa: E402
from rnnmnist.training.data import Mnist, load_mnist  # noqa: E402
from rnnmnist.training.device import training_precision  # noqa: E402
from rnnmnist.training.evaluate import evaluate  # noqa: E402
from rnnmnist.training.loop import fit  # noqa: E402
from rnnmnist.training.model import SequenceClassifier, sequence_shape  # noqa: E402
from rnnmnist.training.run import Run, TrainState  # noqa: E402
from rnnmnist.training.rundir import RunDir  # noqa: E402

console = Console()
Row = dict  # {"section", "name", "value", "unit", "note"}


class Bench:
    def __init__(self, data_dir: Path, tiny: bool, rounds: int, models: list[Path] | None = None) -> None:
        self.data_dir, self.tiny, self.rounds = data_dir, tiny, rounds
        self.models = models or []  # more checkpoints for the handwriting and redrawn sections
        self.rows: list[Row] = []
        self._data: Mnist | None = None
        self._checkpoint: Path | None = None

    def named_models(self) -> list[tuple[str, Path]]:
        """The bench's own default-recipe model, then the checkpoints given with --models, each with its name."""
        return [("default recipe", self.checkpoint()), *((str(p), p) for p in self.models)]

    def checkpoint(self) -> Path:
        """A model trained with the default recipe, plain `rnnmnist train` (trained once, on first use)."""
        if self._checkpoint is None:
            self._tmp = tempfile.TemporaryDirectory()
            out = Path(self._tmp.name) / "model"
            args = ["train", "--data-dir", str(self.data_dir), "--out", str(out)]
            if self.tiny:
                args += ["--iters", "1001", "--hidden-size", "16", "--val-size", "100"]
            self.timed_process(self.cli(*args))
            self._checkpoint = out / "checkpoint.pt"
        return self._checkpoint

    @property
    def data(self) -> Mnist:
        if self._data is None:
            self._data = load_mnist(self.data_dir, 100 if self.tiny else 5000, download=False)
        return self._data

    def add(self, section: str, name: str, value: float, unit: str, note: str = "") -> None:
        self.rows.append({"section": section, "name": name, "value": value, "unit": unit, "note": note})
        console.print(f"  {name}: {fmt(value)} {unit} {note}", markup=False, soft_wrap=True)

    def cli(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "rnnmnist", *args]

    def timed_process(self, argv: list[str]) -> tuple[float, int, str]:
        """Wall seconds, peak RSS (bytes) and stdout of a child process."""
        with tempfile.TemporaryFile() as out:
            start = time.perf_counter()
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.DEVNULL, cwd=ROOT)
            _, status, usage = os.wait4(proc.pid, 0)
            seconds = time.perf_counter() - start
            proc.returncode = os.waitstatus_to_exitcode(status)
            out.seek(0)
            text = out.read().decode()
        if proc.returncode != 0:
            raise SystemExit(f"benchmark command failed ({proc.returncode}): {' '.join(argv)}")
        return seconds, usage.ru_maxrss * 1024, text


def _steps_per_round(bench: Bench, full: int) -> int:
    return 3 if bench.tiny else full


def train_samples_per_s(cfg: config.Config, bench: Bench, steps: int) -> float:
    cfg = replace(cfg, iters=steps * cfg.batch_size + 1, epochs=0.0)
    cfg = replace(cfg, precision=training_precision(cfg.precision, torch.device("cpu")))
    torch.manual_seed(0)
    model = SequenceClassifier(cfg.model)
    data = bench.data
    state = TrainState(cfg, model, len(data.train), torch.device("cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        run = Run(cfg, model, data, state, RunDir(Path(tmp)))
        start = time.perf_counter()
        fit(run)
        return steps * cfg.batch_size / (time.perf_counter() - start)


def reference_samples_per_s(bench: Bench, steps: int, batch_size: int = 128) -> float:
    torch.manual_seed(0)
    model = reference_loop.Net(128)
    seconds = reference_loop.train(model, bench.data.train.images, bench.data.train.labels, steps, batch_size, 0.01, 0)
    return steps * batch_size / seconds


# --- sections


def section_help(bench: Bench) -> None:
    """`rnnmnist --help` latency (whole process)."""
    times = [bench.timed_process(bench.cli("--help"))[0] for _ in range(5)]
    bench.add("help", "rnnmnist --help", statistics.median(times), "s", "median of 5 processes")


def section_train(bench: Bench) -> None:
    """Training samples/s: rnnmnist's loop and the reference loop, alternately, same settings."""
    steps = _steps_per_round(bench, 150)
    small = dict(hidden_size=16) if bench.tiny else {}
    fp32 = config.build(("bench", {"precision": "fp32", **small}))
    default = config.build(("bench", small))
    ref, ours, ours_default = [], [], []
    for _ in range(bench.rounds):
        ref.append(reference_samples_per_s(bench, steps))
        ours.append(train_samples_per_s(fp32, bench, steps))
        ours_default.append(train_samples_per_s(default, bench, steps))
    r, o, d = (statistics.median(x) for x in (ref, ours, ours_default))
    note = f"LSTM 128, batch 128, median of {bench.rounds} alternating rounds of {steps} steps"
    bench.add("train", "reference loop (fp32)", r, "samples/s", note)
    bench.add("train", "rnnmnist loop, fp32", o, "samples/s")
    bench.add("train", "rnnmnist loop, fp32 / reference", o / r, "x", "same settings")
    bench.add("train", "rnnmnist loop, default precision", d, "samples/s", f"({default_precision()})")
    bench.add("train", "rnnmnist default / reference", d / r, "x")


def section_gemm(bench: Bench) -> None:
    """The CPU's limit: the default recipe's LSTM gate GEMMs timed alone (fp32, and bf16 where the CPU has it)
    against rnnmnist's measured training step in the same precision, alternately."""
    tune_allocator()  # as `rnnmnist train` does on the CPU
    small = dict(hidden_size=16, batch_size=32) if bench.tiny else {}
    recipe = config.build(("bench", small))
    steps, features = sequence_shape(recipe.mode)
    shapes = gemm_floor.Shapes(recipe.batch_size, recipe.hidden_size, steps, features)
    repeats, train_steps = (3, 3) if bench.tiny else (15, 100)
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    precisions = tuple(dict.fromkeys(("fp32", default_precision())))  # bf16 only where it is fast here
    floors: dict[str, list[dict[str, float]]] = {p: [] for p in precisions}
    layer_seconds: dict[str, list[float]] = {p: [] for p in precisions}
    step_seconds: dict[str, list[float]] = {p: [] for p in precisions}
    for p in precisions:  # warm up: oneDNN's primitives, the optimizer's first step
        train_samples_per_s(replace(recipe, precision=p), bench, 3)
    for _ in range(bench.rounds):
        for p in precisions:
            floors[p].append(gemm_floor.floor(shapes, dtypes[p], repeats))
            layer_seconds[p].append(gemm_floor.seconds(gemm_floor.lstm_layer(shapes, dtypes[p]), repeats))
            rate = train_samples_per_s(replace(recipe, precision=p), bench, train_steps)
            step_seconds[p].append(recipe.batch_size / rate)
    what = f"LSTM {shapes.hidden}, batch {shapes.batch}, {steps} steps of {features}"
    threads = torch.get_num_threads()
    note = f"{what}: {shapes.flops / 1e9:.3g} GFLOP a step; {threads} thread{'s' * (threads > 1)}, median of {repeats}"
    for p in precisions:
        layouts = {k: statistics.median(f[k] for f in floors[p]) for k in gemm_floor.LAYOUTS}
        layouts["floor"] = min(layouts.values())  # the faster layout's median over the rounds
        step = statistics.median(step_seconds[p])
        for layout in gemm_floor.LAYOUTS:
            bench.add("gemm", f"gate GEMMs of a step, {p}, {layout}", layouts[layout] * 1e3, "ms", note)
            note = ""
        bench.add("gemm", f"GEMM floor, {p}", layouts["floor"] * 1e3, "ms", "the faster layout")
        bench.add("gemm", f"GEMM floor, {p}: achieved", shapes.flops / layouts["floor"] / 1e9, "GFLOP/s")
        how = f"median of {bench.rounds} rounds of {train_steps} steps, alternating with the GEMMs"
        bench.add("gemm", f"training step, {p}", step * 1e3, "ms", f"rnnmnist's loop, default recipe; {how}")
        bench.add("gemm", f"training step / GEMM floor, {p}", step / layouts["floor"], "x")
        layer = statistics.median(layer_seconds[p])
        note = "torch's nn.LSTM forward and backward alone (oneDNN's fused kernels)"
        bench.add("gemm", f"LSTM layer alone, {p}", layer * 1e3, "ms", note)
        bench.add("gemm", f"training step / LSTM layer alone, {p}", step / layer, "x")


def default_precision() -> str:
    return training_precision(config.DEFAULTS.precision, torch.device("cpu"))


def section_eval(bench: Bench) -> None:
    """Eval samples/s on the 10,000 test images."""
    test = bench.data.test
    for precision in ("fp32", default_precision()):
        model = SequenceClassifier(config.DEFAULTS.model)
        evaluate(model, test.head(1000), 1000, precision)  # warm up
        times = []
        for _ in range(bench.rounds):
            start = time.perf_counter()
            evaluate(model, test, config.EVAL_BATCH_SIZE, precision)
            times.append(time.perf_counter() - start)
        bench.add(
            "eval", f"eval ({precision})", len(test) / statistics.median(times), "samples/s", f"{len(test):,} images"
        )
        if precision == "fp32" and default_precision() == "fp32":
            break


def section_wall(bench: Bench) -> None:
    """Whole-process wall time: `rnnmnist train --iters 100000` against the reference script, alternately."""
    iters = "1001" if bench.tiny else "100000"
    with tempfile.TemporaryDirectory() as tmp:
        ref_argv = [sys.executable, "bench/reference_loop.py", "--data-dir", str(bench.data_dir), "--iters", iters]
        ref_argv += ["--out", f"{tmp}/ref.pt"]
        base = ["train", "--data-dir", str(bench.data_dir), "--iters", iters, "--out", f"{tmp}/run", "--force"]
        if bench.tiny:
            ref_argv += ["--hidden-size", "16", "--val-size", "100"]
            base += ["--hidden-size", "16", "--val-size", "100"]
        runs: dict[str, list[float]] = {"reference": [], "default": [], "fp32": []}
        for _ in range(bench.rounds):
            runs["reference"].append(bench.timed_process(ref_argv)[0])
            runs["default"].append(bench.timed_process(bench.cli(*base))[0])
            runs["fp32"].append(bench.timed_process(bench.cli(*base, "--precision", "fp32"))[0])
    ref = statistics.median(runs["reference"])
    bench.add("wall", "reference script, 781 steps", ref, "s", "whole process, median")
    for name in ("default", "fp32"):
        seconds = statistics.median(runs[name])
        label = f"rnnmnist train --iters {iters}" + (" --precision fp32" if name == "fp32" else "")
        bench.add("wall", label, seconds, "s")
        bench.add("wall", f"{label} / reference", seconds / ref, "x", "acceptance: <= 1.15")


def section_tta(bench: Bench) -> None:
    """Time from process start to a written checkpoint with >= 98.5% test accuracy, default recipe; peak RSS."""
    tiny = ["--iters", "1001", "--hidden-size", "16", "--val-size", "100"] if bench.tiny else []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(1 if bench.tiny else max(1, bench.rounds - 1)):
            out = Path(tmp) / f"run{seed}"
            argv = bench.cli("train", "--data-dir", str(bench.data_dir), "--out", str(out), "--json", *tiny)
            seconds, rss, stdout = bench.timed_process([*argv, "--seed", str(seed)])
            acc = json.loads(stdout)["test_accuracy"]
            assert (out / "checkpoint.pt").is_file()
            note = f"seed {seed}, test accuracy {acc:.4f}"
            bench.add("tta", "rnnmnist train (default recipe)", seconds, "s", note)
            bench.add("memory", "peak RSS, default training run", rss / 2**20, "MiB", f"seed {seed}")


def section_scaling(bench: Bench) -> None:
    """Samples/s against hidden size, batch size and sequence length (default precision)."""
    tune_allocator()  # as `rnnmnist train` does on the CPU
    steps = _steps_per_round(bench, 40)
    hidden = (16,) if bench.tiny else (64, 128, 256, 512)
    for h in hidden:
        cfg = config.build(("bench", {"hidden_size": h}))
        bench.add("scaling", f"hidden {h}", train_samples_per_s(cfg, bench, steps), "samples/s", "batch 128")
    batches = (32, 64) if bench.tiny else (32, 64, 128, 256, 512, 1024)
    for b in batches:
        cfg = config.build(("bench", {"batch_size": b, "hidden_size": hidden[0] if bench.tiny else 128}))
        n = max(2, steps * 128 // b) if not bench.tiny else 2
        bench.add("scaling", f"batch {b}", train_samples_per_s(cfg, bench, n), "samples/s", "hidden 128")
    for mode, n in (("rows", steps), ("pixels", 2 if bench.tiny else 4)):
        cfg = config.build(("bench", {"mode": mode, "hidden_size": hidden[0] if bench.tiny else 128}))
        note = "28 steps of 28" if mode == "rows" else "784 steps of 1"
        bench.add("scaling", f"mode {mode}", train_samples_per_s(cfg, bench, n), "samples/s", note)


def section_phases(bench: Bench) -> None:
    """Seconds outside the training loop of `rnnmnist train --iters 100000`: each phase from --json."""
    iters = "1001" if bench.tiny else "100000"
    tiny = ["--hidden-size", "16", "--val-size", "100"] if bench.tiny else []
    with tempfile.TemporaryDirectory() as tmp:
        for precision in ("fp32", default_precision()):
            base = ["train", "--data-dir", str(bench.data_dir), "--iters", iters, "--out", f"{tmp}/run", "--force"]
            runs = []
            for _ in range(bench.rounds):
                argv = bench.cli(*base, *tiny, "--precision", precision, "--json")
                seconds, _, stdout = bench.timed_process(argv)
                runs.append((seconds, json.loads(stdout)["phases"]))
            seconds, phases = sorted(runs, key=lambda r: r[0])[len(runs) // 2]  # the median process
            note = f"{precision}, median of {bench.rounds} processes"
            for name, value in phases.items():
                bench.add("phases", f"{name} ({precision})", max(value, 1e-3), "s", note if name == "startup" else "")
            outside = seconds - phases["train"]
            bench.add("phases", f"outside training ({precision})", outside, "s", "process wall - train; goal <= 2.5")
            if precision == default_precision():
                break


def _against_reference(bench: Bench, section: str, label: str, args: list[str], goals: tuple[str, str]) -> None:
    """`rnnmnist train ARGS` in fp32 and in the default precision, each seed alternately with the reference
    script's 781 steps (seeds 0, 1, 2): whole-process seconds, the ratio to the reference, test accuracy.
    ``goals``: the notes of the fp32 ratio row and of the accuracy rows."""
    seeds = (0,) if bench.tiny else (0, 1, 2)
    tiny = ["--hidden-size", "16", "--val-size", "100", "--iters", "1001"] if bench.tiny else []
    runs: dict[str, list[tuple[float, float]]] = {"reference": [], "fp32": [], default_precision(): []}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            ref = [sys.executable, "bench/reference_loop.py", "--data-dir", str(bench.data_dir), "--out", f"{tmp}/r.pt"]
            seconds, _, stdout = bench.timed_process([*ref, *tiny, "--seed", str(seed)])
            runs["reference"].append((seconds, json.loads(stdout)["test_accuracy"]))
            for precision in dict.fromkeys(("fp32", default_precision())):
                argv = ["train", *args, "--data-dir", str(bench.data_dir), "--out", f"{tmp}/run", "--force", "--json"]
                argv += [*tiny, "--precision", precision, "--seed", str(seed)]
                seconds, _, stdout = bench.timed_process(bench.cli(*argv))
                runs[precision].append((seconds, json.loads(stdout)["test_accuracy"]))
    ref_seconds = statistics.mean(s for s, _ in runs["reference"])
    ref_acc = statistics.mean(a for _, a in runs["reference"])
    bench.add(section, "reference script, 781 steps", ref_seconds, "s", f"mean of {len(seeds)}, test {ref_acc:.4f}")
    ratio_goal, accuracy_goal = goals
    for precision, results in runs.items():
        if precision == "reference":
            continue
        seconds = statistics.mean(s for s, _ in results)
        accs = [a for _, a in results]
        name = f"{label} --precision {precision}"
        bench.add(section, name, seconds, "s", "whole process, mean of seeds " + ", ".join(map(str, seeds)))
        bench.add(section, f"{name} / reference", seconds / ref_seconds, "x", ratio_goal if precision == "fp32" else "")
        note = f"seeds {' / '.join(f'{a:.4f}' for a in accs)}; {accuracy_goal}"
        bench.add(section, f"{name}: mean test accuracy", statistics.mean(accs), "", note)


def section_fp32tta(bench: Bench) -> None:
    """Plain `rnnmnist train --precision fp32` against the reference script's 781 steps, alternately, 3 seeds."""
    goals = ("goal (fp32): <= 0.5", "goal: mean >= 0.985, none below 0.984")
    _against_reference(bench, "fp32tta", "rnnmnist train", [], goals)


def section_fast99(bench: Bench) -> None:
    """`rnnmnist train --config fast99` against the reference script's 781 steps, alternately, 3 seeds."""
    goals = ("goal (fp32): <= 1.0", "goal: mean >= 0.990, none below 0.989")
    _against_reference(bench, "fast99", "rnnmnist train --config fast99", ["--config", "fast99"], goals)


def section_budgets(bench: Bench) -> None:
    """The user's own lengths: `rnnmnist train --iters N` at 100,000 examples (3 seeds, fp32 and default precision,
    alternately with the reference script's 781 steps), then 210,000 and 1,000,000 (seed 0, default precision)."""
    seeds = (0,) if bench.tiny else (0, 1, 2)
    small = ["--hidden-size", "16", "--val-size", "100"] if bench.tiny else []
    short, longer = ("1001", ("2001",)) if bench.tiny else ("100000", ("210000", "1000000"))
    precisions = tuple(dict.fromkeys(("fp32", default_precision())))
    runs: dict[str, list[tuple[float, float]]] = {"reference": [], **{p: [] for p in precisions}}

    def train(tmp: str, iters: str, seed: int, precision: str) -> tuple[float, float, dict]:
        argv = ["train", "--data-dir", str(bench.data_dir), "--out", f"{tmp}/run", "--force", "--json"]
        argv += [*small, "--iters", iters, "--precision", precision, "--seed", str(seed)]
        seconds, _, stdout = bench.timed_process(bench.cli(*argv))
        result = json.loads(stdout)
        return seconds, result["test_accuracy"], result

    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            ref = [sys.executable, "bench/reference_loop.py", "--data-dir", str(bench.data_dir), "--out", f"{tmp}/r.pt"]
            ref += ["--iters", short, *(["--hidden-size", "16", "--val-size", "100"] if bench.tiny else [])]
            seconds, _, stdout = bench.timed_process([*ref, "--seed", str(seed)])
            runs["reference"].append((seconds, json.loads(stdout)["test_accuracy"]))
            for precision in precisions:
                seconds, acc, result = train(tmp, short, seed, precision)
                runs[precision].append((seconds, acc))
        steps = f"{result['steps']} steps of {result['examples'] // result['steps']}"
        ref_seconds = statistics.mean(s for s, _ in runs["reference"])
        ref_acc = statistics.mean(a for _, a in runs["reference"])
        note = f"whole process, mean of seeds {', '.join(map(str, seeds))}, test {ref_acc:.4f}"
        bench.add("budgets", "reference script, 781 steps", ref_seconds, "s", note)
        for precision in precisions:
            seconds = statistics.mean(s for s, _ in runs[precision])
            accs = [a for _, a in runs[precision]]
            label = f"train --iters {short} --precision {precision}"
            bench.add("budgets", label, seconds, "s", f"{steps}; whole process, mean of seeds")
            bench.add("budgets", f"{label} / reference", seconds / ref_seconds, "x", "goal: <= 1.0")
            note = f"min {min(accs):.4f}; goal: mean >= 0.983, none below 0.981"
            bench.add("budgets", f"{label}: mean test accuracy", statistics.mean(accs), "", note)
        for iters in longer:
            seconds, acc, result = train(tmp, iters, 0, default_precision())
            steps = f"{result['steps']} steps of {result['examples'] // result['steps']}"
            label = f"train --iters {iters} ({default_precision()})"
            bench.add("budgets", f"{label}: test accuracy", acc, "", f"seed 0, {steps}, {seconds:.1f} s whole process")


def section_long(bench: Bench) -> None:
    """784-step sequences (--mode pixels): per-time-step cost and training samples/s, denormals kept and flushed."""
    argv = [sys.executable, "bench/long_sequences.py", "--data-dir", str(bench.data_dir), "--steps"]
    argv += ["1", "--hidden-size", "16", "--batches", "4,16", "--val-size", "100"] if bench.tiny else ["2"]
    for denormals in ("keep", "flush"):  # separate processes: the setting must precede torch's threads
        _, _, stdout = bench.timed_process([*argv, "--denormals", denormals])
        for row in map(json.loads, stdout.splitlines()):
            where = f"denormals {denormals}"
            if row["what"] == "forward per time step":
                note = f"{where}, fixed share {row['fixed_share']:.2f}"
                bench.add("long", f"forward per time step, batch {row['batch']}", row["microseconds"], "us", note)
            elif row["what"] == "training samples/s":
                onednn = "oneDNN on" if row["onednn"] else "oneDNN off"
                name = f"pixels, batch {row['batch']}, {onednn}"
                bench.add("long", name, row["samples_per_s"], "samples/s", where)


def _write_images(folder: Path, digits: torch.Tensor, seed: int, redrawn: bool, png_only: bool = True) -> None:
    from PIL import Image

    from rnnmnist.images.redraw import random_style, redraw

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i, digit in enumerate(digits.numpy()):
        if redrawn:
            style = random_style(rng)
            style.fmt = "PNG" if png_only else style.fmt
            (folder / f"{i:05d}.{style.fmt.lower()}").write_bytes(redraw(digit, style, seed=seed + i))
        else:
            Image.fromarray(digit).save(folder / f"{i:05d}.png")


def section_predict(bench: Bench) -> None:
    """Predict images/s on a folder of PNGs, decoding included, against decoding alone."""
    from PIL import Image

    from rnnmnist.images.inputs import InputImages
    from rnnmnist.images.predict import predict_digits
    from rnnmnist.training.checkpoint import load_model

    n = 40 if bench.tiny else 1000
    model, ckpt = load_model(bench.checkpoint())
    for kind, redrawn in (("redrawn digits, 64-400 px", True), ("28x28 MNIST digits", False)):
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "images"
            _write_images(folder, bench.data.test.images[:n], 7, redrawn)
            files = sorted(folder.iterdir())
            start = time.perf_counter()
            for f in files:
                with Image.open(f) as im:
                    im.load()
            decode = n / (time.perf_counter() - start)
            start = time.perf_counter()
            with InputImages([str(folder)]) as images:
                results = predict_digits(model, ckpt.config.precision, images.results())
            rate = n / (time.perf_counter() - start)
            assert len(results) == n and not any(r.error for r in results)
            seconds = bench.timed_process(bench.cli("predict", str(bench.checkpoint()), str(folder), "--json"))[0]
        bench.add("predict", f"predict, {kind}", rate, "images/s", f"{n} PNGs, in process, decoding included")
        bench.add("predict", f"  / decoding alone ({decode:,.0f} images/s)", rate / decode, "x")
        bench.add("predict", f"whole command, {kind}", n / seconds, "images/s", f"{seconds:.1f} s with start-up")


def section_redrawn(bench: Bench) -> None:
    """Accuracy on held-out MNIST test digits redrawn as people's images, against naive resizing."""
    n = 30 if bench.tiny else 2000
    first = 0 if bench.tiny else 5000  # the tests use the first test digits; these are held out
    digits, labels = bench.data.test.images[first : first + n], bench.data.test.labels[first : first + n]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        _write_images(folder, digits, 99, redrawn=True, png_only=False)
        for name, path in bench.named_models():
            original, ours, plain = _redrawn_accuracy(path, folder, digits, labels)
            note = f"{name}: {n} test digits from #{first}"
            bench.add("redrawn", "accuracy, original test digits", original, "", note)
            bench.add("redrawn", "accuracy, redrawn, rnnmnist preprocessing", ours, "", "PNG and JPEG, 64-400 px")
            bench.add("redrawn", "accuracy, redrawn, naive resize to 28x28", plain, "")


def _redrawn_accuracy(
    path: Path, folder: Path, digits: torch.Tensor, labels: torch.Tensor
) -> tuple[float, float, float]:
    """(original digits, redrawn through rnnmnist's preprocessing, redrawn naively resized) accuracies."""
    from PIL import Image

    from rnnmnist.images.decode import open_image, to_gray
    from rnnmnist.images.inputs import InputImages
    from rnnmnist.images.predict import predict_digits, probabilities
    from rnnmnist.training.checkpoint import load_model

    model, ckpt = load_model(path)
    with InputImages([str(folder)]) as images:
        results = predict_digits(model, ckpt.config.precision, images.results())
    naive = np.stack(
        [
            np.asarray(Image.fromarray(to_gray(open_image(p))).resize((28, 28)), dtype=np.float32)
            for p in sorted(folder.iterdir())
        ]
    )
    ours = np.mean([r.prediction == int(y) for r, y in zip(results, labels)])
    plain = (probabilities(model, torch.from_numpy(naive), ckpt.config.precision).argmax(1) == labels).float().mean()
    original = (probabilities(model, digits.float() / 255, ckpt.config.precision).argmax(1) == labels).float().mean()
    return float(original), float(ours), float(plain)


def section_handwriting(bench: Bench) -> None:
    """Accuracy on real handwriting that is not MNIST (UCI optdigits, rendered as scans), naive vs rnnmnist's
    preprocessing, per model; and calibration: how often predictions above 0.9 confidence are right."""
    from rnnmnist.training.checkpoint import load_model

    inputs = handwriting.prepare("test", limit=40 if bench.tiny else None)
    for name, path in bench.named_models():
        model, ckpt = load_model(path)
        hw = handwriting.measure(model, ckpt.config.precision, inputs)
        mnist = handwriting.mnist_test(model, ckpt.config.precision, bench.data_dir)
        note = f"{hw['n']} optdigits 'test' digits, 64-200 px PNGs"
        bench.add("handwriting", f"{name}: MNIST test", mnist["mnist_accuracy"], "", "10,000 test images")
        bench.add("handwriting", f"{name}: handwriting, rnnmnist preprocessing", hw["accuracy_preprocessed"], "", note)
        bench.add("handwriting", f"{name}: handwriting, naive resize to 28x28", hw["accuracy_naive"], "")
        for where, r in (("MNIST test", mnist), ("handwriting", hw)):
            share, right = r["share_confident"], r["accuracy_confident"]
            bench.add("handwriting", f"{name}: {where}, share above 0.9 confidence", share, "")
            if right is not None:
                bench.add("handwriting", f"{name}: {where}, accuracy above 0.9 confidence", right, "")


SECTIONS: dict[str, Callable[[Bench], None]] = {
    "help": section_help,
    "train": section_train,
    "gemm": section_gemm,
    "eval": section_eval,
    "wall": section_wall,
    "tta": section_tta,
    "scaling": section_scaling,
    "phases": section_phases,
    "fp32tta": section_fp32tta,
    "fast99": section_fast99,
    "budgets": section_budgets,
    "long": section_long,
    "predict": section_predict,
    "redrawn": section_redrawn,
    "handwriting": section_handwriting,
}


def fmt(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def machine() -> dict:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def git_commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    return done.stdout.strip() or "unknown"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=os.environ.get("RNNMNIST_DATA_DIR"))
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated: {','.join(SECTIONS)}")
    p.add_argument("--rounds", type=int, default=3, help="alternating repetitions per comparison")
    p.add_argument("--tiny", action="store_true", help="seconds-long smoke run on synthetic data")
    p.add_argument("--out", type=Path, help="JSON results file [default: bench/results/DATE-COMMIT.json]")
    p.add_argument("--models", type=Path, nargs="*", default=[], help="more checkpoints for the handwriting section")
    a = p.parse_args()
    chosen = [s.strip() for s in a.sections.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown:
        raise SystemExit(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    tmp = None
    if a.tiny:
        from rnnmnist.training.synthetic import make_tiny_mnist

        tmp = tempfile.TemporaryDirectory()
        a.data_dir = make_tiny_mnist(Path(tmp.name))
        a.rounds = 1
    elif a.data_dir is None or not (a.data_dir / "MNIST" / "raw").is_dir():
        raise SystemExit("the benchmarks need the real MNIST: pass --data-dir or set RNNMNIST_DATA_DIR")
    import torch._dynamo  # the first optimizer step imports it: keep that out of every timing

    bench = Bench(a.data_dir.resolve(), a.tiny, a.rounds, a.models)
    started = time.time()
    for name in chosen:
        console.print(f"[bold]{name}[/]: {SECTIONS[name].__doc__}")
        SECTIONS[name](bench)
    table = Table(title=f"rnnmnist benchmarks ({git_commit()}, {machine()['cpus']} CPUs, torch {torch.__version__})")
    for col, justify in (("Section", "left"), ("Measure", "left"), ("Value", "right"), ("Unit", "left")):
        table.add_column(col, justify=justify)
    table.add_column("Note")
    for r in bench.rows:
        table.add_row(r["section"], r["name"], fmt(r["value"]), r["unit"], r["note"])
    console.print(table)
    out = a.out or ROOT / "bench" / "results" / f"{time.strftime('%Y%m%d-%H%M%S')}-{git_commit()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "commit": git_commit(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "tiny": a.tiny,
        "machine": machine(),
        "seconds": time.time() - started,
        "rows": bench.rows,
    }
    out.write_text(json.dumps(payload, indent=2) + "\n")
    console.print(f"results: {out}")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
