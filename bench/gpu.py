"""A GPU check in one go (under 5 minutes on a CUDA machine), or its dry run on the CPU (under a minute).

    bash bench/gpu.sh --out gpu.json                   # on a CUDA machine (needs the real MNIST)
    bash bench/gpu.sh --device cpu --dry-run           # tiny sizes on the CPU: checks the script, not the GPU

It measures, in this order:
1. in this process, training throughput of rnnmnist's own loop (the real step: augmentation,
   autocast, the optimizer step, the loop's logging) against a bare ``nn.LSTM`` loop (bench/reference_loop.py's,
   cuDNN on a GPU) at the same hidden size and batch, alternately, for rows (28 steps of 28, the
   default recipe's shapes) and pixels (784 steps of 1, the ``pixels`` preset's shapes);
2. as a child process, the default recipe's time to accuracy on rows: ``rnnmnist train --device D --json``, at the
   recipe's own length (a number of steps, never a wall-clock stop); its test accuracy against 98.5%;
3. as a child process, one epoch of sMNIST: ``rnnmnist train --config pixels --epochs 1``: its accuracy and time.
It prints one JSON object on stdout (progress goes to stderr) and writes it to ``--out`` after every
part, so a run stopped early keeps what it measured.

Time budget (a full run): every part has a fixed number of steps, and a wall-clock cap that ends it
early (throughput: no further round; training processes: killed, figure null) so the whole stays
under 5 minutes whatever the GPU. The step counts were sized from CPU figures: see FULL.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import reference_loop  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from rnnmnist import config, presets, process  # noqa: E402
from rnnmnist.errors import DataError  # noqa: E402
from rnnmnist.training.data import Mnist, load_mnist  # noqa: E402
from rnnmnist.training.device import training_precision  # noqa: E402
from rnnmnist.training.loop import fit  # noqa: E402
from rnnmnist.training.model import SequenceClassifier  # noqa: E402
from rnnmnist.training.run import Run, TrainState  # noqa: E402
from rnnmnist.training.rundir import RunDir  # noqa: E402

TARGET_ACCURACY = 0.985  # the default recipe's goal on rows


@dataclass(frozen=True)
class Sizes:
    """How much each part runs. ``*_cap_s``: its wall-clock cap in seconds."""

    rows_steps: int  # per timed round and variant
    pixels_steps: int
    rounds: int
    warmup_steps: int  # one untimed round first: cuDNN handles, autotuning, allocator
    throughput_cap_s: float  # per mode: no new round starts after this
    tta_cap_s: float
    epoch_cap_s: float
    tiny: tuple[str, ...]  # extra `rnnmnist train` flags
    tiny_config: dict[str, Any]  # the same, for the in-process runs
    cpu_threads: int | None  # None: torch's default


# A full run, sized for an H200 from CPU figures (estimates: nothing here has run on a GPU yet). On
# 2 cores of an AMD EPYC with AVX-512 bf16 a rows step of the default recipe (LSTM 64, batch 256)
# takes ~15 ms in fp32 (820 steps in ~12 s); on a GPU that step is ~150 small kernel launches,
# ~2-5 ms, so rows are budgeted at no faster than the CPU: 9 x 200 timed steps (27 s) and the recipe's
# 820 (12 s). A pixels step (LSTM 256, batch 128, 784 steps) takes ~0.8 s on those cores (estimated
# from LSTM 128's 0.28 s in docs/performance.md); cuDNN runs the 784 steps one after the other, forward and backward,
# ~10-40 ms a step, budgeted at 1/13 of the CPU's (60 ms): 9 x 20 timed steps (11 s) and the epoch's
# 429 (26 s). About 2 minutes in all with start-ups; the caps (30 + 30 + 70 + 110 s, each part ending
# early) keep the whole under 4.5 minutes if the guesses are wrong, and bench/gpu.sh stops it at 5.
FULL = Sizes(200, 20, 3, 10, 30.0, 70.0, 110.0, (), {}, None)
# The dry run computes on one thread: its figures mean nothing, and it must finish in under a minute on
# a busy machine too (two threads on two oversubscribed cores stalled a tiny step 100-fold there).
DRY = Sizes(3, 2, 1, 1, 20.0, 60.0, 60.0, ("--hidden-size", "16", "--val-size", "100"), {"hidden_size": 16}, 1)
DRY_BATCH = {"rows": 32, "pixels": 50}  # the dry run's batches: its data set is 500 training images


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_info(device: torch.device) -> dict[str, Any]:
    """What the figures were measured on; every CUDA query only where there is CUDA."""
    info: dict[str, Any] = {
        "type": device.type,
        "name": cpu_name(),
        "cpu": cpu_name(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cpu_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            name=torch.cuda.get_device_name(device),
            capability=f"{props.major}.{props.minor}",
            memory_gib=round(props.total_memory / 2**30, 1),
            cudnn_enabled=torch.backends.cudnn.enabled,
            cudnn_benchmark=torch.backends.cudnn.benchmark,
            cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
            matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32,
        )
    return info


def recipe(mode: str, sizes: Sizes, dry: bool) -> config.Config:
    """The config a mode is measured with: the default recipe (rows) or the ``pixels`` preset."""
    values = config.read_toml(presets.find("pixels").path) if mode == "pixels" else {}
    values = {**values, **sizes.tiny_config}
    if dry:
        values["batch_size"] = DRY_BATCH[mode]
    return config.build((mode, values))


class PixelNet(nn.Module):
    """reference_loop.Net read as 784 steps of one pixel: the bare loop for --mode pixels."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(1, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x.reshape(x.shape[0], -1, 1))  # (N, 784, H)
        return self.fc(out[:, -1])


def bare_samples_per_s(cfg: config.Config, data: Mnist, device: torch.device, steps: int) -> float:
    """bench/reference_loop.py's loop (fp32, no augmentation) at ``cfg``'s hidden size and batch."""
    torch.manual_seed(0)
    net = reference_loop.Net(cfg.hidden_size) if cfg.mode == "rows" else PixelNet(cfg.hidden_size)
    net = net.to(device)
    synchronize(device)
    start = time.perf_counter()
    reference_loop.train(net, data.train.images, data.train.labels, steps, cfg.batch_size, cfg.lr, 0)
    synchronize(device)
    return steps * cfg.batch_size / (time.perf_counter() - start)


def rnnmnist_samples_per_s(cfg: config.Config, data: Mnist, device: torch.device, steps: int) -> float:
    """rnnmnist's own loop (:func:`fit`), built as `rnnmnist train` builds it, for ``steps`` steps.

    Timed around the whole loop with the device synchronised at both ends: the loop's own
    ``train_seconds`` does not wait for the GPU to finish.
    """
    cfg = replace(cfg, iters=steps * cfg.batch_size + 1, epochs=0.0, eval_every=0, save_every=0)
    torch.manual_seed(0)
    model = SequenceClassifier(cfg.model).to(device)
    state = TrainState(cfg, model, len(data.train), device)
    with tempfile.TemporaryDirectory() as tmp:
        run = Run(cfg, model, data, state, RunDir(Path(tmp)))
        synchronize(device)
        start = time.perf_counter()
        fit(run)
        synchronize(device)
        return steps * cfg.batch_size / (time.perf_counter() - start)


def throughput(mode: str, sizes: Sizes, data: Mnist, device: torch.device, dry: bool) -> dict[str, float]:
    """Samples/s of the bare loop, rnnmnist in fp32 and rnnmnist in its auto precision, alternately."""
    base = recipe(mode, sizes, dry)
    auto = training_precision("auto", device)
    variants = {
        "bare": lambda n: bare_samples_per_s(base, data, device, n),
        "fp32": lambda n: rnnmnist_samples_per_s(replace(base, precision="fp32"), data, device, n),
        "auto": lambda n: rnnmnist_samples_per_s(replace(base, precision=auto), data, device, n),
    }
    for run in variants.values():
        run(sizes.warmup_steps)
    steps = sizes.rows_steps if mode == "rows" else sizes.pixels_steps
    rates: dict[str, list[float]] = {name: [] for name in variants}
    began = time.perf_counter()
    for _ in range(sizes.rounds):
        for name, run in variants.items():
            rates[name].append(run(steps))
        if time.perf_counter() - began > sizes.throughput_cap_s:
            log(f"  {mode}: wall-clock cap reached after {len(rates['bare'])} round(s)")
            break
    bare, fp32, mixed = (statistics.median(rates[name]) for name in variants)
    log(f"  {mode}: bare {bare:,.0f}, rnnmnist fp32 {fp32:,.0f}, rnnmnist {auto} {mixed:,.0f} samples/s")
    return {
        f"{mode}_bare_samples_per_s": bare,
        f"{mode}_fp32_samples_per_s": fp32,
        f"{mode}_auto_samples_per_s": mixed,
        f"{mode}_fp32_vs_bare": fp32 / bare,
        f"{mode}_auto_vs_bare": mixed / bare,
        f"{mode}_rounds": float(len(rates["bare"])),
        f"{mode}_steps_per_round": float(steps),
        f"{mode}_hidden_size": float(base.hidden_size),
        f"{mode}_batch_size": float(base.batch_size),
    }


def train_process(name: str, args: list[str], cap_s: float, threads: int | None) -> dict[str, float | None]:
    """`rnnmnist train ARGS --json` as a child process: accuracy, steps, and its seconds three ways."""
    argv = [sys.executable, "-m", "rnnmnist", "train", *args, "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)} if threads else None
    keys = ("test_accuracy", "steps", "train_seconds", "loop_seconds", "wall_seconds")
    start = time.perf_counter()
    try:
        done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=cap_s, env=env)
    except subprocess.TimeoutExpired:
        log(f"  {name}: stopped at its cap of {cap_s:.0f} s")
        return {f"{name}_{k}": None for k in keys}
    wall = time.perf_counter() - start
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        log(f"  {name}: rnnmnist train failed ({done.returncode}): {last}")
        return {f"{name}_{k}": None for k in keys}
    result = json.loads(done.stdout)
    figures = {
        "test_accuracy": result["test_accuracy"],
        "steps": float(result["steps"]),
        "train_seconds": result["train_seconds"],  # summed step times, as `train --json` reports them
        "loop_seconds": result["phases"]["train"],  # the loop's wall time (it ends on a synchronising log step)
        "wall_seconds": wall,  # the whole process: start-up, CUDA context, data, evaluation, save
    }
    accuracy, loop = figures["test_accuracy"], figures["loop_seconds"]
    log(f"  {name}: test accuracy {accuracy:.4f}, loop {loop:.1f} s, wall {wall:.1f} s")
    return {f"{name}_{k}": v for k, v in figures.items()}


def commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    return done.stdout.strip() or "unknown"


class Report:
    """The JSON summary, written to ``out`` after every part."""

    def __init__(self, out: Path | None, device: torch.device, dry: bool, sizes: Sizes) -> None:
        self.out, self.started = out, time.perf_counter()
        self.payload: dict[str, Any] = {
            "check": "rnnmnist gpu",
            "dry_run": dry,
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "commit": commit(),
            "device": device_info(device),
            "auto_precision": training_precision("auto", device),
            "target_accuracy": TARGET_ACCURACY,
            "figures": {},
        }

    def add(self, figures: dict[str, float | None]) -> None:
        self.payload["figures"].update(figures)
        self.payload["figures"]["total_seconds"] = time.perf_counter() - self.started
        self.write()

    def write(self) -> None:
        if self.out is not None:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self.out.write_text(json.dumps(self.payload, indent=2) + "\n")


def pick_device(name: str, dry: bool) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu check: --device cuda, but torch finds no CUDA device here")
    if name == "cpu" and not dry:
        raise SystemExit(
            "gpu check: no CUDA device; on the CPU run it as a dry run: bash bench/gpu.sh --device cpu --dry-run"
        )
    return torch.device(name)


def data_folder(given: Path | None, dry: bool, tmp: Path) -> Path:
    """The real MNIST for a full run; for a dry run, tiny IDX files written here (its figures mean nothing)."""
    if dry:
        from rnnmnist.training.synthetic import make_tiny_mnist

        return make_tiny_mnist(tmp)
    folder = given or Path(os.environ.get("RNNMNIST_DATA_DIR") or ROOT / "data")
    return folder.resolve()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    p.add_argument("--dry-run", action="store_true", help="tiny sizes and tiny synthetic data: checks the script")
    p.add_argument("--data-dir", type=Path, help="the real MNIST [default: $RNNMNIST_DATA_DIR, else ./data]")
    p.add_argument("--out", type=Path, help="also write the JSON summary here")
    a = p.parse_args()
    device = pick_device(a.device, a.dry_run)
    sizes = DRY if a.dry_run else FULL
    if sizes.cpu_threads:
        torch.set_num_threads(sizes.cpu_threads)
    with tempfile.TemporaryDirectory() as tmp, process.training():  # the opt-ins `rnnmnist train` makes
        data_dir = data_folder(a.data_dir, a.dry_run, Path(tmp) / "data")
        report = Report(a.out, device, a.dry_run, sizes)
        log(f"gpu check on {report.payload['device']['name']} ({device.type}), data {data_dir}")
        try:
            split = load_mnist(data_dir, 100 if a.dry_run else config.DEFAULTS.val_size, download=False)
        except DataError as e:
            raise SystemExit(f"gpu check: {e}; pass --data-dir (the folder holding MNIST/raw)") from None
        data = Mnist(split.train.to(device), split.val.to(device), split.test.to(device))
        for mode in ("rows", "pixels"):
            log(f"throughput, {mode}")
            report.add(throughput(mode, sizes, data, device, a.dry_run))
        if device.type == "cuda":
            report.payload["device"]["peak_memory_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        common = ["--data-dir", str(data_dir), "--device", device.type, "--out", f"{tmp}/run", "--force"]
        log("time to accuracy, rows, the default recipe")
        tiny = [*sizes.tiny, "--iters", "1001"] if a.dry_run else []
        report.add(train_process("tta_rows", [*common, *tiny, "--seed", "0"], sizes.tta_cap_s, sizes.cpu_threads))
        log("one sMNIST epoch (the pixels preset)")
        tiny = [*sizes.tiny, "--batch-size", str(DRY_BATCH["pixels"])] if a.dry_run else []
        report.add(
            train_process(
                "smnist_epoch",
                [*common, "--config", "pixels", "--epochs", "1", *tiny],
                sizes.epoch_cap_s,
                sizes.cpu_threads,
            )
        )
    missing = [k for k, v in report.payload["figures"].items() if v is None or not math.isfinite(v)]
    report.payload["missing"] = missing
    report.write()
    print(json.dumps(report.payload))
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
