"""A minimal hand-written PyTorch loop: the yardstick rnnmnist's own loop is measured against.

The notebook's network (LSTM 128 over 28 rows, linear head) trained the way a
careful person would write it by hand in one file: MNIST read straight from the
IDX files into tensors, batches drawn by indexing a permutation, Adam with
torch's OneCycleLR, the full test set evaluated at the end, weights saved.
It deliberately does not import rnnmnist.

    python bench/reference_loop.py --data-dir ../shared/data --iters 100000
"""

from __future__ import annotations

import argparse
import json
import time

START = time.perf_counter()

import torch  # noqa: E402
from torch import nn  # noqa: E402


def read_idx(path: str, header: int) -> torch.Tensor:
    with open(path, "rb") as f:
        return torch.frombuffer(bytearray(f.read()), dtype=torch.uint8, offset=header)


class Net(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(28, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.fc(out[:, -1])


def train(
    model: nn.Module, train_x: torch.Tensor, train_y: torch.Tensor, steps: int, batch_size: int, lr: float, seed: int
) -> float:
    """Train ``model`` for ``steps`` steps; return the seconds the loop took."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    perm, pos = torch.randperm(len(train_x), generator=gen), 0
    t0 = time.perf_counter()
    for _ in range(steps):
        if pos + batch_size > len(perm):
            perm, pos = torch.randperm(len(train_x), generator=gen), 0
        idx = perm[pos : pos + batch_size]
        pos += batch_size
        loss = nn.functional.cross_entropy(model(train_x[idx].float() / 255), train_y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", default="data")
    p.add_argument("--iters", type=int, default=100_000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--hidden-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-size", type=int, default=5000, help="first training images held out, unused")
    p.add_argument("--out", default="/tmp/reference_loop.pt")
    a = p.parse_args()

    raw = f"{a.data_dir}/MNIST/raw/"
    train_x = read_idx(raw + "train-images-idx3-ubyte", 16).view(-1, 28, 28)[a.val_size :]
    train_y = read_idx(raw + "train-labels-idx1-ubyte", 8).long()[a.val_size :]
    test_x = read_idx(raw + "t10k-images-idx3-ubyte", 16).view(-1, 28, 28)
    test_y = read_idx(raw + "t10k-labels-idx1-ubyte", 8).long()

    torch.manual_seed(a.seed)
    model = Net(a.hidden_size)
    steps = (a.iters - 1) // a.batch_size  # the notebook's `while step * batch_size < iters`
    train_seconds = train(model, train_x, train_y, steps, a.batch_size, a.lr, a.seed)
    result = {
        "steps": steps,
        "train_seconds": train_seconds,
        "train_samples_per_s": steps * a.batch_size / train_seconds,
    }
    model.eval()
    with torch.inference_mode():
        preds = torch.cat([model(test_x[i : i + 1000].float() / 255).argmax(1) for i in range(0, len(test_x), 1000)])
    result["test_accuracy"] = (preds == test_y).float().mean().item()
    torch.save(model.state_dict(), a.out)
    result["wall_seconds"] = time.perf_counter() - START
    print(json.dumps(result))


if __name__ == "__main__":
    main()
