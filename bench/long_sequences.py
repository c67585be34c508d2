"""784-step sequences (--mode pixels / permuted) on the CPU: where a training step's time goes, and what helps.

    python bench/long_sequences.py --data-dir D --denormals keep    # as before: ~30 samples/s, minutes
    python bench/long_sequences.py --data-dir D                     # as `rnnmnist train` runs (flushed)
    python bench/long_sequences.py --data-dir D --epoch 128,512     # plus one epoch of sMNIST each (minutes)

An LSTM over 784 steps of one pixel does 784 small matrix products per batch, one
after the other. Measured here:
- the per-time-step cost at batch 1 against batch B (how much of a step is fixed
  overhead rather than arithmetic),
- training samples/s against the batch size, with oneDNN's RNN kernels on and off,
- with --epoch: test accuracy after one epoch at each batch size (the learning rate
  scaled with the square root of the batch), and its wall time.
``--denormals keep`` leaves the CPU's denormal floats on, as rnnmnist did before; the
default flushes them to zero as the CLI now does (rnnmnist.process.denormals_flushed):
back-propagated through 784 steps, gradients fall into the denormal range, where each
operation takes a slow path. Results print as JSON lines; bench/run.py's `long`
section runs a short form of both.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from rnnmnist import config
from rnnmnist.process import denormals_flushed, tune_allocator
from rnnmnist.training.data import load_mnist
from rnnmnist.training.evaluate import evaluate
from rnnmnist.training.loop import fit
from rnnmnist.training.model import SequenceClassifier
from rnnmnist.training.run import Run, TrainState
from rnnmnist.training.rundir import RunDir

PIXELS = 784


def per_timestep_seconds(hidden: int, batch: int, repeats: int = 3) -> float:
    """Forward seconds per time step of an LSTM over 784 steps, best of ``repeats``."""
    lstm = nn.LSTM(1, hidden, batch_first=True)
    x = torch.rand(batch, PIXELS, 1)
    best = math.inf
    with torch.inference_mode():
        lstm(x[:, :16])
        for _ in range(repeats):
            start = time.perf_counter()
            lstm(x)
            best = min(best, time.perf_counter() - start)
    return best / PIXELS


def _fit(cfg: config.Config, data, mkldnn: bool = True) -> tuple[nn.Module, TrainState]:
    """Train a fresh model (seed 0) by ``cfg`` through rnnmnist's own loop, in a throw-away run folder."""
    torch.manual_seed(0)
    model = SequenceClassifier(cfg.model)
    state = TrainState(cfg, model, len(data.train), torch.device("cpu"))
    with torch.backends.mkldnn.flags(enabled=mkldnn), tempfile.TemporaryDirectory() as tmp:
        fit(Run(cfg, model, data, state, RunDir(Path(tmp))))
    return model, state


def train_samples_per_s(cfg: config.Config, data, steps: int, mkldnn: bool = True) -> float:
    cfg = replace(cfg, iters=steps * cfg.batch_size + 1, epochs=0.0, eval_every=0, save_every=0)
    _, state = _fit(cfg, data, mkldnn)
    return steps * cfg.batch_size / state.train_seconds


def one_epoch(data, batch: int, hidden: int, lr: float) -> dict:
    cfg = config.build(
        (
            "bench",
            {
                "mode": "pixels",
                "hidden_size": hidden,
                "batch_size": batch,
                "epochs": 1.0,
                "lr": lr,
                "grad_clip": 1.0,
                "augment": False,
                "precision": "fp32",
                "log_every": 10**6,
            },
        )
    )
    model, state = _fit(cfg, data)
    test = evaluate(model, data.test, 1000, "fp32")
    return {
        "batch": batch,
        "lr": lr,
        "steps": state.step,
        "train_seconds": state.train_seconds,
        "samples_per_s": state.examples / state.train_seconds,
        "test_accuracy": test.accuracy,
    }


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--hidden-size", type=int, default=128)
    p.add_argument("--batches", default="32,128,512", help="batch sizes of the throughput table")
    p.add_argument("--steps", type=int, default=3, help="training steps timed per batch size")
    p.add_argument("--epoch", default="", help="batch sizes to train one epoch at (e.g. 128,1024)")
    p.add_argument("--val-size", type=int, default=5000)
    p.add_argument("--denormals", choices=("flush", "keep"), default="flush")
    a = p.parse_args(argv)
    tune_allocator()
    # Entered before any computation, as `rnnmnist train` does: torch's threads copy the setting.
    with denormals_flushed() if a.denormals == "flush" else contextlib.nullcontext():
        importlib.import_module("torch._dynamo")  # the optimizer's first step would import it: not in the timings
        return _measure(a)


def _measure(a: argparse.Namespace) -> list[dict]:
    rows: list[dict] = []

    def out(row: dict) -> None:
        row["denormals"] = a.denormals
        rows.append(row)
        print(json.dumps(row), flush=True)

    batches = [int(b) for b in a.batches.split(",")]
    one = per_timestep_seconds(a.hidden_size, 1)
    for b in batches:
        t = per_timestep_seconds(a.hidden_size, b)
        out(
            {
                "what": "forward per time step",
                "batch": b,
                "microseconds": 1e6 * t,
                "fixed_share": min(1.0, one / t),
                "note": "fixed_share: batch 1's time step / this one's",
            }
        )
    data = load_mnist(a.data_dir, a.val_size, download=False)
    base = config.build(
        (
            "bench",
            {"mode": "pixels", "hidden_size": a.hidden_size, "precision": "fp32", "augment": False, "log_every": 10**6},
        )
    )
    for b in batches:
        for mkldnn in (True, False):
            rate = train_samples_per_s(replace(base, batch_size=b), data, a.steps, mkldnn)
            out({"what": "training samples/s", "batch": b, "onednn": mkldnn, "samples_per_s": rate})
    for b in [int(b) for b in a.epoch.split(",") if b]:
        lr = 0.002 * math.sqrt(b / 128)  # configs/pixels.toml's 0.002 at batch 128, scaled by sqrt(batch)
        out({"what": "one epoch of sMNIST", **one_epoch(data, b, a.hidden_size, lr)})
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
