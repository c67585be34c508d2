"""Where a run computes and in what precision: devices that exist, precisions that this device runs.

Precision is a property of how a run computes, not of the model: a checkpoint
trained in bf16 holds fp32 weights, and any device can use it. Whether a device
runs bf16 is found out by running it (a tiny LSTM, GRU and RNN forward and
backward under autocast, once per device type), not by reading CPU flags alone:
torch's oneDNN LSTM has no bf16 kernels on CPUs without AVX-512 and fails there.
Setting ``RNNMNIST_DISABLE_BF16=1`` makes the probe answer "no" everywhere, as on
such a machine (the test suite uses it to check the fallback path).
"""

from __future__ import annotations

import functools
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from rnnmnist.errors import BadValueError

DISABLE_BF16_ENV = "RNNMNIST_DISABLE_BF16"


def _mps_available() -> bool:
    return hasattr(torch.backends, "mps") and torch.backends.mps.is_available()


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then MPS, then the CPU; an explicit device must be present (else exit 2)."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if _mps_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise BadValueError("--device cuda: no CUDA device is available here; use --device auto or cpu")
    if name == "mps" and not _mps_available():
        raise BadValueError("--device mps: no Apple MPS device is available here; use --device auto or cpu")
    return torch.device(name)


def bf16_disabled() -> bool:
    return os.environ.get(DISABLE_BF16_ENV, "") not in ("", "0")


@functools.cache
def _bf16_runs(device_type: str) -> bool:
    """Can this device type run the recurrent layers under bf16 autocast? Tried once, with tiny layers."""
    device = torch.device(device_type)
    try:
        with torch.random.fork_rng(devices=[]):  # the probe must not move the seeded RNG a run relies on
            x = torch.ones(2, 3, 4, device=device)
            for cls in (torch.nn.LSTM, torch.nn.GRU, torch.nn.RNN):
                layer = cls(4, 8, batch_first=True).to(device)
                with torch.autocast(device_type=device_type, dtype=torch.bfloat16):
                    out, _ = layer(x)
                out.float().sum().backward()
    except (RuntimeError, NotImplementedError, TypeError):
        # oneDNN: "could not create a primitive descriptor"; other backends: missing kernels.
        return False
    return True


def bf16_runs(device: torch.device) -> bool:
    """Whether ``device`` can run rnnmnist's models under bf16 autocast (probed once, cached)."""
    if bf16_disabled():
        return False
    return _bf16_runs(device.type)


def _cpu_bf16_units() -> str | None:
    """The CPU's bf16 matrix units (AMX, AVX-512 BF16), which make bf16 faster than fp32; None: emulated, slower."""
    if torch.backends.cpu.get_cpu_capability() not in ("AVX512", "AVX512_BF16", "AMX"):
        return None
    if not sys.platform.startswith("linux"):
        return "AVX-512"  # the probe decided it runs; without /proc/cpuinfo trust torch's AVX-512 build
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
    except OSError:
        return "AVX-512"
    return "AMX" if "amx_bf16" in flags else "AVX-512 BF16" if "avx512_bf16" in flags else None


def auto_precision(device: torch.device) -> tuple[str, str]:
    """What ``precision = "auto"`` computes in on ``device``, and why in a few words: bf16 where it runs
    *and* pays off, else fp32."""
    if not bf16_runs(device):
        return "fp32", _why_not_bf16(device)
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16", "the GPU supports it"
        return "fp32", "this GPU has no fast bf16"
    if device.type == "cpu":
        units = _cpu_bf16_units()
        return ("bf16", units) if units else ("fp32", "no AVX-512 BF16 or AMX, so bf16 would be emulated and slower")
    return "fp32", f"bf16 runs on {device.type} but was not measured to be faster"


def bf16_fast(device: torch.device) -> bool:
    """Whether bf16 runs *and* pays off on ``device`` (what ``precision = "auto"`` picks it for)."""
    return auto_precision(device)[0] == "bf16"


def _why_not_bf16(device: torch.device) -> str:
    if bf16_disabled():
        return f"bf16 is turned off by {DISABLE_BF16_ENV}"
    if device.type == "cpu":
        return "this CPU cannot run bf16 recurrent layers (torch needs AVX-512 BF16 or AMX for them)"
    return f"this {device.type} device cannot run bf16 recurrent layers"


def training_precision(name: str, device: torch.device) -> str:
    """The precision a training run uses: ``auto`` -> bf16 where fast, else fp32; an explicit bf16 that
    this device cannot run is a usage error naming why and what to use."""
    if name == "auto":
        return "bf16" if bf16_fast(device) else "fp32"
    if name == "bf16" and not bf16_runs(device):
        raise BadValueError(f"--precision bf16: {_why_not_bf16(device)}; use --precision fp32 (or auto)")
    return name


@dataclass(frozen=True)
class Precision:
    """The precision a command computes in, and why it differs from the one asked for, if it does."""

    name: str  # "fp32" or "bf16"
    note: str | None = None  # one informational line when it fell back


def usable_precision(wanted: str, device: torch.device) -> Precision:
    """For using a model (eval, predict, plot, serve): ``wanted`` (usually the checkpoint's training
    precision) where this device runs it, otherwise fp32 with a note. Never an error: a model file
    must evaluate everywhere."""
    if wanted == "auto":
        return Precision("bf16" if bf16_fast(device) else "fp32")
    if wanted == "bf16" and not bf16_runs(device):
        return Precision("fp32", f"computing in fp32: the model was trained in bf16 but {_why_not_bf16(device)}")
    return Precision(wanted)


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """Mixed precision for forward passes: bf16 matrix products, fp32 weights and reductions."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
