"""Bench for "not a digit": how well a checkpoint's decision refuses what is not a single digit while it
keeps (and reads) digits from any writer, and what that costs in training time.

The decision measured is the one ``rnnmnist predict`` makes (``rnnmnist.training.digitcheck``): the
checkpoint's stored threshold, and the fallback that a checkpoint without one gets. For comparison,
every checkpoint is also judged by the largest probability and by the energy, each calibrated here
on the validation split as written (the first 5,000 MNIST training images) to keep the same share.

Sets, none of which rnnmnist trains or tunes on:

- kept (digits): MNIST test; other writers (MNIST test binarised, stretched to fill the box, both, thick
  pen, thin pen, small scans; ``bench/heldout_nondigits.py``); UCI optdigits as people hand them in
  (``bench/handwriting.py``, its test half);
- refused: hand-drawn non-digits (letters, marks, scribbles, dots, blanks) and two-digit numbers
  (``bench/heldout_nondigits.py``: another shape set, another renderer than training's generator).

``--train-cost`` times whole ``rnnmnist train`` runs of the default recipe against the same recipe
without non-digits and pen looks (``--outlier-share 0 --aug-writers 0``), alternately in one process, which is
the ratio to quote: wall times on a shared machine are not comparable across runs.

    python bench/nondigits.py --quick                                    # smoke: synthetic digits, small sets
    python bench/nondigits.py --data-dir ../shared/data runs/a/checkpoint.pt runs/b/checkpoint.pt
    python bench/nondigits.py --data-dir ../shared/data --train-cost 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from rnnmnist.training.digitcheck import FALLBACK, KEEP, DigitCheck, decide, image_reasons

PLAIN = ("--outlier-share", "0", "--aug-writers", "0")  # the default recipe before it learned "not a digit"


@dataclass
class Sets:
    val: torch.Tensor  # (N, 28, 28) float digits for the comparison methods' calibration
    kept: dict[str, tuple[torch.Tensor, np.ndarray]]  # name -> (digits, labels): should be kept
    refused: dict[str, tuple[torch.Tensor, np.ndarray]]  # name -> (images, family names): should be refused


def build_sets(data_dir: Path | None, quick: bool) -> Sets:
    import heldout_nondigits as held

    if data_dir is None:  # --quick without MNIST: the tiny synthetic digits the tests use
        from rnnmnist.training.synthetic import synthetic_digits

        val_u8, _ = synthetic_digits(500, 2)
        test_u8, test_y = synthetic_digits(300, 3)
    else:
        from rnnmnist.training.data import load_split

        val_u8 = load_split(data_dir, "val", 5000, download=False).images
        test = load_split(data_dir, "test", 0, download=False)
        test_u8, test_y = test.images, test.labels
    test_x = test_u8.float() / 255
    n_writers = 300 if quick else 5000
    kept = {"MNIST test": (test_x, test_y.numpy())}
    for name, images in held.other_writers(test_x[:n_writers].numpy()).items():
        kept[name] = (torch.from_numpy(images), test_y[:n_writers].numpy())
    if not quick:
        from handwriting import prepare

        opt = prepare("test")
        kept["optdigits (test)"] = (torch.from_numpy(opt.preprocessed), opt.labels)
    nd, families = held.nondigits(per_family=6 if quick else 40)
    numbers = held.two_digit_numbers(test_x.numpy(), n=60 if quick else 500)
    refused = {
        "non-digits": (torch.from_numpy(nd), families),
        "two-digit numbers": (torch.from_numpy(numbers), np.array(["number"] * len(numbers))),
    }
    return Sets(val_u8.float() / 255, kept, refused)


@torch.inference_mode()
def logits_of(model: torch.nn.Module, images: torch.Tensor, precision: str, batch: int = 1000) -> torch.Tensor:
    from rnnmnist.training.device import autocast

    out = []
    for i in range(0, images.shape[0], batch):
        with autocast(torch.device("cpu"), precision):
            out.append(model(images[i : i + batch]).float())
    return torch.cat(out) if out else torch.zeros(0, 10)


def recalibrated(score: str, val: torch.Tensor, val_logits: torch.Tensor) -> DigitCheck:
    """The image checks plus ``score``, its threshold keeping :data:`KEEP` of the validation digits."""
    from rnnmnist.training.digitcheck import scores

    probe = DigitCheck(score=score, threshold=-1e9, keep=KEEP)
    passing = torch.tensor([r is None for r in image_reasons(val, probe)])
    values = scores(val_logits, score)[passing].double()
    share = float(passing.float().mean())
    threshold = float(torch.quantile(values, max(0.0, 1 - KEEP / share))) if share > KEEP else -1e9
    return DigitCheck(score=score, threshold=threshold, keep=KEEP, calibrated_on=len(val))


def measure(path: Path, sets: Sets) -> dict:
    """One checkpoint's figures: per decision, the share kept of each digit set (and kept and right), the share
    refused of each other set (non-digits by family too); accuracy on every digit set."""
    from rnnmnist.training.checkpoint import load_model

    model, ckpt = load_model(path)
    precision = ckpt.config.precision
    logits = {k: logits_of(model, x, precision) for k, (x, _) in {**sets.kept, **sets.refused}.items()}
    val_logits = logits_of(model, sets.val, precision)
    stored = ckpt.digit_check
    decisions = {"stored": stored} if stored.calibrated_on else {}
    decisions["fallback"] = FALLBACK  # what the same model would get as a checkpoint from before 0.4.0
    decisions |= {f"checks+{s} (here)": recalibrated(s, sets.val, val_logits) for s in ("msp", "energy")}
    row: dict = {"checkpoint": str(path), "decision": stored.to_dict(), "methods": {}}
    for k, (_, labels) in sets.kept.items():
        row[f"accuracy {k}"] = float((logits[k].argmax(1).numpy() == labels).mean())
    for name, check in decisions.items():
        m: dict = {}
        for k, (x, labels) in sets.kept.items():
            kept = np.array([reason is None for reason, _ in decide(x, logits[k], check)])
            m[f"kept {k}"] = float(kept.mean())
            m[f"kept and right {k}"] = float((kept & (logits[k].argmax(1).numpy() == labels)).mean())
        for k, (x, families) in sets.refused.items():
            refused = np.array([reason is not None for reason, _ in decide(x, logits[k], check)])
            m[f"refused {k}"] = float(refused.mean())
            if k == "non-digits":
                m["refused by family"] = {f: float(refused[families == f].mean()) for f in dict.fromkeys(families)}
        row["methods"][name] = m
    return row


def table(rows: list[dict]) -> str:
    keys = ["refused non-digits", "refused two-digit numbers", "kept MNIST test", "kept binarised+stretched"]
    keys += ["kept thin pen", "kept small scan", "kept optdigits (test)"]
    lines = ["| checkpoint | decision | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 2)]
    for row in rows:
        for method, m in row["methods"].items():
            cells = [f"{100 * m[k]:.1f}" if k in m else "-" for k in keys]
            lines.append(f"| {row['checkpoint']} | {method} | " + " | ".join(cells) + " |")
    acc = [k for k in rows[0] if k.startswith("accuracy ")] if rows else []
    lines += ["", "| checkpoint | " + " | ".join(k.removeprefix("accuracy ") for k in acc) + " |"]
    lines.append("|" + "---|" * (len(acc) + 1))
    for row in rows:
        lines.append(f"| {row['checkpoint']} | " + " | ".join(f"{100 * row[k]:.2f}" for k in acc) + " |")
    return "\n".join(lines)


def train_cost(data_dir: Path | None, rounds: int, extra: list[str]) -> dict:
    """Whole default runs against the same without non-digits and pen looks, alternately: the ratio of the
    median step time (from each run's logged examples/s: a burst of another process's work on a shared
    machine moves the median little), the median ratio of training and wall seconds as the runs report
    them, and each run's test accuracy."""
    runs: dict[str, list[dict]] = {"default": [], "plain": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for name, flags in (("plain", PLAIN), ("default", ())):
                out = Path(tmp) / f"{name}-{r}"
                data = ["--data-dir", str(data_dir)] if data_dir else ["--synthetic"]
                args = [sys.executable, "-m", "rnnmnist", "train", *data, "--out", str(out), "--json"]
                done = subprocess.run([*args, *flags, *extra], capture_output=True, text=True, check=True)
                summary = json.loads(done.stdout)
                logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
                rates = [row["examples_per_s"] for row in logged[1:] if "examples_per_s" in row]
                row = {k: summary[k] for k in ("train_seconds", "wall_seconds", "test_accuracy")}
                runs[name].append(row | {"median_examples_per_s": statistics.median(rates)})
    pairs = list(zip(runs["default"], runs["plain"]))
    ratio = {
        "step_time_ratio": statistics.median(p["median_examples_per_s"] / d["median_examples_per_s"] for d, p in pairs)
    }
    ratio |= {f"{k}_ratio": statistics.median(d[k] / p[k] for d, p in pairs) for k in ("train_seconds", "wall_seconds")}
    return {"train_cost": ratio | runs}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="*", type=Path, help="checkpoints to measure")
    p.add_argument("--data-dir", type=Path, help="a folder holding MNIST/raw (without: --quick's synthetic digits)")
    p.add_argument("--train-cost", type=int, metavar="ROUNDS", help="time default runs against plain ones")
    p.add_argument("--train-flags", default="", help="extra flags for --train-cost's runs (e.g. --iters 20000)")
    p.add_argument("--json", type=Path, help="append every figure as JSON lines here")
    p.add_argument("--quick", action="store_true", help="smoke run: small sets, synthetic digits without --data-dir")
    a = p.parse_args()
    if a.data_dir is None and not a.quick:
        p.error("--data-dir is needed (or --quick)")
    rows = []
    if a.train_cost:
        rows.append(train_cost(a.data_dir, a.train_cost, a.train_flags.split()))
        print(json.dumps(rows[-1]), flush=True)
    if a.checkpoints:
        sets = build_sets(a.data_dir, a.quick)
        measured = [measure(path, sets) for path in a.checkpoints]
        rows += measured
        print(table(measured))
    if a.json:
        with a.json.open("a") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)


if __name__ == "__main__":
    main()
