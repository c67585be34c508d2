"""The LSTM's gate matrix products timed alone: the floor a training step cannot beat on this CPU.

A training step of an LSTM with H hidden units over T steps of I features, batch B, does per
time step two forward products into the 4H gates (the input's, B x I by I x 4H, and the
hidden state's, B x H by H x 4H) and four backward ones (the gradients with respect to the
input, B x 4H by 4H x I, and the hidden state, B x 4H by 4H x H, and to both weights,
4H x B by B x I and 4H x B by B x H): 6 * B * 4H * (I + H) * T floating-point operations.
Everything else a step does (the gates' nonlinearities, the head, the loss, augmentation,
the optimizer) only adds to it.

Two layouts of the same products are timed, and the faster is the floor:
- ``per step``: every product once per time step, as the recurrence is written;
- ``batched``: the products that do not wait for the recurrence (the input's forward, the
  input gradient, both weight gradients) done once over all T * B rows, as oneDNN's LSTM
  arranges them; only the two hidden-state products stay per step.

Beside them, torch's own LSTM layer is timed doing the same forward and backward pass
(``lstm_layer``): what its fused kernels reach, which with several threads can beat separate
products (one parallel region per time step instead of several).

    python bench/gemm_floor.py                     # the default recipe's shapes, fp32 and bf16
    python bench/run.py --sections gemm            # the same, beside the measured training step
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class Shapes:
    batch: int
    hidden: int
    steps: int  # time steps per sequence
    features: int  # inputs per time step

    @property
    def gates(self) -> int:
        return 4 * self.hidden  # the LSTM's input, forget, cell and output gates

    @property
    def flops(self) -> float:
        """Floating-point operations of one training step's gate products (a multiply-add counts 2)."""
        return 3 * 2 * self.batch * self.gates * (self.features + self.hidden) * self.steps


def _tensors(s: Shapes, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)

    def rand(*shape: int) -> torch.Tensor:
        return (torch.rand(*shape, generator=g) - 0.5).to(dtype)

    return {
        "x": rand(s.steps, s.batch, s.features),  # the inputs of every time step
        "h": rand(s.steps, s.batch, s.hidden),  # the hidden states the forward pass kept
        "dgates": rand(s.steps, s.batch, s.gates),  # the gates' gradients of the backward pass
        "w_ih": rand(s.gates, s.features),
        "w_hh": rand(s.gates, s.hidden),
        "bias": rand(s.gates),
        "gates": rand(s.batch, s.gates),
        "gates_all": rand(s.steps * s.batch, s.gates),
        "dx": rand(s.batch, s.features),
        "dx_all": rand(s.steps * s.batch, s.features),
        "dh": rand(s.batch, s.hidden),
        "dw_ih": rand(s.gates, s.features),
        "dw_hh": rand(s.gates, s.hidden),
    }


def per_step(s: Shapes, dtype: torch.dtype) -> Callable[[], None]:
    """One training step's gate products, each once per time step."""
    t = _tensors(s, dtype)
    x, h, dg, gates = t["x"], t["h"], t["dgates"], t["gates"]
    w_ih_t, w_hh_t = t["w_ih"].t(), t["w_hh"].t()

    def run() -> None:
        for i in range(s.steps):  # forward: (B, I) @ (I, 4H) + bias, then += (B, H) @ (H, 4H)
            torch.addmm(t["bias"], x[i], w_ih_t, out=gates)
            gates.addmm_(h[i], w_hh_t)
        for i in reversed(range(s.steps)):  # backward
            torch.mm(dg[i], t["w_hh"], out=t["dh"])  # (B, 4H) @ (4H, H): to the previous hidden state
            torch.mm(dg[i], t["w_ih"], out=t["dx"])  # (B, 4H) @ (4H, I): to the input
            t["dw_hh"].addmm_(dg[i].t(), h[i])  # (4H, B) @ (B, H)
            t["dw_ih"].addmm_(dg[i].t(), x[i])  # (4H, B) @ (B, I)

    return run


def batched(s: Shapes, dtype: torch.dtype) -> Callable[[], None]:
    """The same products, those that do not wait for the recurrence done once over all T * B rows."""
    t = _tensors(s, dtype)
    x_all = t["x"].reshape(s.steps * s.batch, s.features)  # (T*B, I)
    h_all = t["h"].reshape(s.steps * s.batch, s.hidden)  # (T*B, H)
    dg_all = t["dgates"].reshape(s.steps * s.batch, s.gates)  # (T*B, 4H)
    gates = t["gates_all"].view(s.steps, s.batch, s.gates)
    w_hh_t = t["w_hh"].t()

    def run() -> None:
        torch.addmm(t["bias"], x_all, t["w_ih"].t(), out=t["gates_all"])  # (T*B, 4H): every step's input part
        for i in range(s.steps):
            gates[i].addmm_(t["h"][i], w_hh_t)
        for i in reversed(range(s.steps)):
            torch.mm(t["dgates"][i], t["w_hh"], out=t["dh"])
        torch.mm(dg_all, t["w_ih"], out=t["dx_all"])  # (T*B, I)
        torch.mm(dg_all.t(), h_all, out=t["dw_hh"])  # (4H, H)
        torch.mm(dg_all.t(), x_all, out=t["dw_ih"])  # (4H, I)

    return run


LAYOUTS = {"per step": per_step, "batched": batched}


def lstm_layer(s: Shapes, dtype: torch.dtype) -> Callable[[], None]:
    """torch's own LSTM layer (oneDNN's fused kernels on the CPU) forward and backward over one batch, in
    ``dtype`` as training computes it (bf16: autocast, weights fp32): the same products with the gates'
    nonlinearities, and nothing of the head, the loss, the data or the optimizer."""
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(s.features, s.hidden, batch_first=True)
    x = torch.rand(s.batch, s.steps, s.features)  # (B, T, I), as the model feeds it
    device = x.device.type

    def run() -> None:
        with torch.autocast(device, dtype=dtype, enabled=dtype != torch.float32):
            _, (h_n, _) = lstm(x)  # h_n: (1, B, H)
        h_n.float().sum().backward()
        lstm.zero_grad(set_to_none=True)

    return run


def seconds(run: Callable[[], None], repeats: int, warmup: int = 3) -> float:
    """Median wall seconds of ``run`` over ``repeats`` calls, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def floor(s: Shapes, dtype: torch.dtype, repeats: int) -> dict[str, float]:
    """Seconds of one training step's gate products in each layout, and the floor (the faster)."""
    timed = {name: seconds(make(s, dtype), repeats) for name, make in LAYOUTS.items()}
    return {**timed, "floor": min(timed.values())}


def main() -> None:
    from rnnmnist import config
    from rnnmnist.training.model import sequence_shape

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=20)
    a = p.parse_args()
    steps, features = sequence_shape(config.DEFAULTS.mode)
    s = Shapes(config.DEFAULTS.batch_size, config.DEFAULTS.hidden_size, steps, features)
    for dtype in (torch.float32, torch.bfloat16):
        result = floor(s, dtype, a.repeats)
        result["LSTM layer"] = seconds(lstm_layer(s, dtype), a.repeats)
        row = {**asdict(s), "dtype": str(dtype).removeprefix("torch."), "threads": torch.get_num_threads()}
        row |= {f"{k} ms": v * 1e3 for k, v in result.items()} | {"GFLOP/s": s.flops / result["floor"] / 1e9}
        print(json.dumps(row))


if __name__ == "__main__":
    main()
