"""Research bench for "not a digit": which score, which image checks and which training make a model
refuse what is not a single digit, while it keeps (and reads) digits from any writer.

For every model and method it calibrates one threshold on validation digits (the first 5,000 MNIST
training images, which the default recipe holds out) so that 98% of them are kept, and then reports on
sets it never tuned on:

- digits kept: MNIST test; other writers (MNIST test binarised, stretched to fill the box, both, thick pen,
  thin pen, small scans; ``bench/heldout_nondigits.py``) and UCI optdigits as people hand them in
  (``bench/handwriting.py``, its test half);
- rejected: hand-drawn non-digits and two-digit numbers (``bench/heldout_nondigits.py``).

Methods (each a decision "is it one digit?"):

- ``msp``: the largest softmax probability above the threshold;
- ``energy``: logsumexp of the logits above the threshold;
- ``checks+msp`` / ``checks+energy``: first the image checks (no ink; more than one sizeable ink blob:
  "more than one character"), then the score;
- ``...@mix``: calibrated instead on the validation digits plus a copy of them given other writers' looks
  (``writer_augment``), so that 98% of that mix is kept: a threshold for digits from any writer;
- a reject-class model (11 outputs) decides "not a digit" when the reject class wins, then its ``msp``.

Models: ``--checkpoint`` (e.g. a default ``rnnmnist train`` run), and with ``--train KIND[,KIND]`` models
trained here with the default recipe (same model, optimiser, schedule, augmentation and bf16 as
``rnnmnist train``, same length) plus:

- ``plain``: nothing more (the reference);
- ``oe``: outlier exposure: ``--oe-size`` generated non-digits (``rnnmnist.training.nondigits``) added to
  each batch, their loss the cross-entropy to the uniform distribution, weighted ``--oe-weight``;
- ``reject``: the same non-digits as an 11th class;
- ``writers``: train-time augmentation towards other writers (random binarisation, stretch to the box,
  thicker and thinner strokes, downscale-upscale) on a share of each batch;
- ``writers+oe``, ``writers+reject``: both;
- ``writers+eoe``: the writers' augmentation and energy-margin outlier exposure (the digits' logsumexp
  pushed above ``M_IN``, the non-digits' below ``M_OUT``, squared hinges weighted ``--oe-weight``).

``--step-cost`` measures each kind's training step against ``plain``'s, alternately in this one process
(the same machine and load), which is the ratio to quote: wall times of whole runs on a shared machine
are not comparable.

    python bench/nondigits.py --quick                                    # smoke: tiny models, small sets
    python bench/nondigits.py --data-dir /work/shared/data --checkpoint /tmp/nd/base/checkpoint.pt
    python bench/nondigits.py --data-dir /work/shared/data --train oe,reject,writers+oe --save /tmp/nd/models
    python bench/nondigits.py --data-dir /work/shared/data --step-cost plain,oe,reject,writers+oe
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

KEEP = 0.98  # share of validation digits every method keeps
REJECT = 10  # the reject class's index in an 11-class model
INK = 0.2  # a pixel above this is ink, for the image checks (0.3 and 0.5 broke thin strokes into blobs)
BLOB_SHARE = 0.2  # a second ink blob with at least this share of the ink makes "more than one character"
MIN_INK_PIXELS = 4  # fewer ink pixels than this: "no ink"
POOL_STEPS = 8  # steps' worth of non-digits generated at a time
KINDS = ("plain", "oe", "reject", "writers", "writers+oe", "writers+reject", "writers+eoe")
M_IN, M_OUT = 8.0, 4.0  # energy-margin outlier exposure (writers+eoe): logsumexp margins, as in Liu et al. 2020


# --------------------------------------------------------------------------- image checks


def components(images: torch.Tensor, level: float = INK) -> tuple[torch.Tensor, torch.Tensor]:
    """8-connected ink blobs of (N, 28, 28) images: (labels (N, 28, 28) int, 0 = paper; sizes (N, 2)
    of the largest and second largest blob in pixels). Label propagation by 3x3 max-pooling, batched."""
    n, h, w = images.shape
    mask = images > level
    start = torch.arange(1, h * w + 1, dtype=torch.float32).view(1, h, w).expand(n, h, w)
    labels = torch.where(mask, start, torch.zeros(()))
    for _ in range(h * w):  # converges in far fewer: the longest path through a blob
        grown = F.max_pool2d(labels.unsqueeze(1), 3, 1, 1).squeeze(1) * mask
        if torch.equal(grown, labels):
            break
        labels = grown
    key = (torch.arange(n).view(n, 1, 1) * (h * w + 1) + labels.long()).view(-1)[mask.view(-1)]
    counts = torch.zeros(n * (h * w + 1), dtype=torch.long).index_add_(0, key, torch.ones_like(key))
    top2 = counts.view(n, h * w + 1).topk(2, dim=1).values  # (N, 2)
    return labels.long(), top2


def image_checks(images: torch.Tensor, blob_share: float = BLOB_SHARE) -> np.ndarray:
    """Per image: "" (passes), "no ink", or "more than one character" (a second blob of >= ``blob_share``)."""
    ink = (images > INK).sum(dim=(1, 2))
    _, top2 = components(images)
    total = ink.clamp_min(1)
    several = top2[:, 1] >= blob_share * total
    out = np.full(images.shape[0], "", dtype=object)
    out[several.numpy()] = "more than one character"
    out[(ink < MIN_INK_PIXELS).numpy()] = "no ink"
    return out


# --------------------------------------------------------------------------- the sets


@dataclass
class Sets:
    val: torch.Tensor  # (N, 28, 28) float digits for calibration
    val_labels: torch.Tensor
    val_mix: torch.Tensor  # val and a writer-augmented copy of it: the "@mix" calibration keeps 98% of both
    kept: dict[str, tuple[torch.Tensor, np.ndarray]]  # name -> (digits, labels): should be kept
    rejected: dict[str, tuple[torch.Tensor, np.ndarray]]  # name -> (images, family names): should be refused


def build_sets(data_dir: Path | None, quick: bool) -> tuple[Sets, torch.Tensor, torch.Tensor]:
    """The evaluation sets, and the training images and labels (uint8, int64) for the models trained here."""
    import heldout_nondigits as held

    if data_dir is None:  # --quick without MNIST: the tiny synthetic digits the tests use
        from rnnmnist.training.synthetic import synthetic_digits

        train_u8, train_y = synthetic_digits(1200, 2)
        test_u8, test_y = synthetic_digits(300, 3)
    else:
        from rnnmnist.training.data import load_split

        full = load_split(data_dir, "train", 0, download=False)
        test = load_split(data_dir, "test", 0, download=False)
        train_u8, train_y, test_u8, test_y = full.images, full.labels, test.images, test.labels
    n_val = 500 if quick else 5000
    val, val_y = train_u8[:n_val].float() / 255, train_y[:n_val]
    train_u8, train_y = train_u8[n_val:], train_y[n_val:]
    test = test_u8.float() / 255
    n_writers = 300 if quick else 5000
    kept = {"MNIST test": (test, test_y.numpy())}
    for name, images in held.other_writers(test[:n_writers].numpy()).items():
        kept[name] = (torch.from_numpy(images), test_y[:n_writers].numpy())
    if not quick:
        from handwriting import prepare

        opt = prepare("test")
        kept["optdigits (test)"] = (torch.from_numpy(opt.preprocessed), opt.labels)
    nd, families = held.nondigits(per_family=6 if quick else 40)
    numbers = held.two_digit_numbers(test.numpy(), n=60 if quick else 500)
    rejected = {
        "non-digits": (torch.from_numpy(nd), families),
        "two-digit numbers": (torch.from_numpy(numbers), np.array(["number"] * len(numbers))),
    }
    mix = torch.cat([val, writer_augment(val, torch.Generator().manual_seed(7), share=1.0)])
    return Sets(val, val_y, mix, kept, rejected), train_u8, train_y


# --------------------------------------------------------------------------- scoring and calibration


@torch.inference_mode()
def logits_of(model: nn.Module, images: torch.Tensor, precision: str, batch: int = 1000) -> torch.Tensor:
    from rnnmnist.training.device import autocast

    model.eval()
    out = []
    for i in range(0, images.shape[0], batch):
        with autocast(torch.device("cpu"), precision):
            out.append(model(images[i : i + batch]).float())
    return torch.cat(out)


def scores(logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """Higher is more digit-like. An 11-class model's reject class counts against the digit it would be."""
    digits = logits[:, :10]
    p = torch.softmax(logits, dim=1)
    return {"msp": p[:, :10].max(dim=1).values, "energy": torch.logsumexp(digits, dim=1)}


@dataclass
class Decision:
    """One method calibrated: a score name, whether image checks run first, and the threshold."""

    score: str
    checks: bool
    threshold: float
    blob_share: float = BLOB_SHARE

    @property
    def name(self) -> str:
        return ("checks+" if self.checks else "") + self.score


def decide(d: Decision, logits: torch.Tensor, reasons: np.ndarray) -> np.ndarray:
    """Per image: "" (a digit) or the reason it is not."""
    s = scores(logits)[d.score].numpy()
    out = np.where(s >= d.threshold, "", "not like any digit").astype(object)
    if logits.shape[1] > 10:
        out[(logits.argmax(dim=1) == REJECT).numpy()] = "not like any digit"
    if d.checks:
        out = np.where(reasons != "", reasons, out)
    return out


def calibrate(score: str, checks: bool, logits: torch.Tensor, reasons: np.ndarray) -> Decision:
    """The threshold that keeps ``KEEP`` of the validation digits (after the checks, when used)."""
    s = scores(logits)[score].numpy()
    passing = np.ones(len(s), dtype=bool)
    if logits.shape[1] > 10:
        passing &= (logits.argmax(dim=1) != REJECT).numpy()
    if checks:
        passing &= reasons == ""
    share = passing.mean()
    if share <= KEEP:  # the checks alone already refuse more than allowed: accept every score
        return Decision(score, checks, -math.inf)
    q = 1 - KEEP / share
    return Decision(score, checks, float(np.quantile(s[passing], q)))


def evaluate_model(name: str, model: nn.Module, precision: str, sets: Sets, reasons: dict[str, np.ndarray]) -> dict:
    """Every method's figures for one model: kept (and accuracy) on digits, rejected on the rest."""
    val_logits = logits_of(model, sets.val, precision)
    val_acc = float((val_logits[:, :10].argmax(1) == sets.val_labels).float().mean())
    logits = {k: logits_of(model, x, precision) for k, (x, _) in {**sets.kept, **sets.rejected}.items()}
    row: dict = {"model": name, "val_accuracy": val_acc, "methods": {}}
    for k, (_, labels) in sets.kept.items():
        row[f"accuracy {k}"] = float((logits[k][:, :10].argmax(1).numpy() == labels).mean())
    nd_msp = scores(logits["non-digits"])["msp"].numpy()
    row["non-digits above 0.9 msp"] = float((nd_msp > 0.9).mean())
    mix_logits = logits_of(model, sets.val_mix, precision)
    methods = [(score, checks, "") for score in ("msp", "energy") for checks in (False, True)]
    for score, checks, on in [*methods, ("energy", True, "@mix"), ("msp", True, "@mix")]:
        if on:
            d = calibrate(score, checks, mix_logits, reasons["val_mix"])
        else:
            d = calibrate(score, checks, val_logits, reasons["val"])
        m: dict = {"threshold": d.threshold}
        for k, (_, labels) in sets.kept.items():
            verdict = decide(d, logits[k], reasons[k])
            kept = verdict == ""
            m[f"kept {k}"] = float(kept.mean())
            m[f"kept and right {k}"] = float((kept & (logits[k][:, :10].argmax(1).numpy() == labels)).mean())
        for k, (_, families) in sets.rejected.items():
            verdict = decide(d, logits[k], reasons[k])
            m[f"rejected {k}"] = float((verdict != "").mean())
            if k == "non-digits":
                m["rejected by family"] = {
                    f: float((verdict[families == f] != "").mean()) for f in dict.fromkeys(families)
                }
        row["methods"][d.name + on] = m
    return row


# --------------------------------------------------------------------------- training here


def writer_augment(images: torch.Tensor, g: torch.Generator, share: float = 0.5) -> torch.Tensor:
    """Digits as other writers and scanners give them, on (B, 28, 28) in [0, 1] (batches come in random
    order): ``share`` of them, in five equal parts: binarised (threshold 0.3-0.6), stretched to fill the
    20 px box, up to 1.5 px thicker, up to half a pixel thinner strokes, a 10-16 px scan enlarged; the
    rest as they are (fixed counts, so fixed draws per batch)."""
    from rnnmnist.training.augment import thickness
    from rnnmnist.training.nondigits import fit_to_box

    b = images.shape[0]
    q = int(b * share / 5)
    out = images.clone()
    sl = [slice(i * q, (i + 1) * q) for i in range(5)]  # binarise, stretch, thicker, thinner, small scan
    t = 0.3 + torch.rand(q, 1, 1, generator=g) * 0.3
    out[sl[0]] = (images[sl[0]] > t).float()
    out[sl[1]] = fit_to_box(images[sl[1]], keep_aspect=False)
    out[sl[2]] = thickness(images[sl[2]], 0.0, 1.5)
    out[sl[3]] = thickness(images[sl[3]], 0.5, 0.0)
    side = int(torch.randint(10, 17, (1,), generator=g))
    small = F.interpolate(images[sl[4]].unsqueeze(1), size=(side, side), mode="area")
    out[sl[4]] = F.interpolate(small, size=(28, 28), mode="bilinear", align_corners=False).squeeze(1).clamp(0, 1)
    return out


@dataclass
class Trainer:
    """The default recipe's training step, plus this bench's extras; one step at a time."""

    kind: str
    cfg: object
    model: nn.Module
    optimizer: torch.optim.Optimizer
    stream: object
    train_u8: torch.Tensor
    train_y: torch.Tensor
    g: torch.Generator
    total: int
    oe_size: int
    oe_weight: float
    writers_share: float = 0.5
    step: int = 0
    pool_steps: int = POOL_STEPS
    reuse: int = 1
    pool: torch.Tensor | None = None
    pool_at: int = 0

    def run_step(self) -> float:
        from rnnmnist.training.augment import augment
        from rnnmnist.training.data import scale
        from rnnmnist.training.device import autocast
        from rnnmnist.training.nondigits import nondigit_batch
        from rnnmnist.training.optimizer import optimizer_step
        from rnnmnist.training.schedule import lr_and_beta1

        cfg = self.cfg
        lr, beta1 = lr_and_beta1(cfg, self.step, self.total)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
            if beta1 is not None:
                group["betas"] = (beta1, group["betas"][1])
        idx = self.stream.next()
        images = scale(self.train_u8.index_select(0, idx))  # (B, 28, 28)
        labels = self.train_y.index_select(0, idx)
        b = labels.shape[0]
        extra = "oe" in self.kind or "reject" in self.kind
        if extra:
            # Non-digits are made POOL_STEPS batches at a time: a batch of 32 cost 2.5 ms (fixed per-op costs),
            # 40% of a 6 ms step; 256 at once cost 8.5 ms. Each is used once.
            # With reuse > 1 each is used that many times (a different augmentation each time).
            if self.pool is None or self.pool_at + self.oe_size > self.pool.shape[0] * self.reuse:
                self.pool, self.pool_at = nondigit_batch(self.g, self.oe_size * self.pool_steps, self.train_u8), 0
            at = self.pool_at % self.pool.shape[0]
            others = self.pool[at : at + self.oe_size]  # (m, 28, 28)
            self.pool_at += self.oe_size
            images = torch.cat([images, others])  # (B + m, 28, 28): one augmentation call for both
        images = augment(images, cfg)
        if "writers" in self.kind:
            images[:b] = writer_augment(images[:b], self.g, self.writers_share)
        with autocast(images.device, cfg.precision):
            logits = self.model(images).float()
        if "reject" in self.kind:
            loss = F.cross_entropy(logits, torch.cat([labels, torch.full((self.oe_size,), REJECT)]))
        else:
            loss = F.cross_entropy(logits[:b], labels)
            out = logits[b:]
            if "eoe" in self.kind:  # energy margins: digits' logsumexp above M_IN, non-digits' below M_OUT
                inside, outside = torch.logsumexp(logits[:b], dim=1), torch.logsumexp(out, dim=1)
                margins = F.relu(M_IN - inside).pow(2).mean() + F.relu(outside - M_OUT).pow(2).mean()
                loss = loss + self.oe_weight * margins
            elif extra:  # cross-entropy to the uniform distribution over the 10 digits
                loss = loss + self.oe_weight * (torch.logsumexp(out, dim=1) - out.mean(dim=1)).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer_step(self.optimizer)
        self.step += 1
        return float(loss.detach())


def make_trainer(
    kind: str, train_u8, train_y, seed: int, steps: int | None, oe_size: int, oe_weight: float, quick: bool,
    writers_share: float = 0.5,
):  # fmt: skip
    from rnnmnist.config import DEFAULTS, fit_to_length
    from rnnmnist.training.data import BatchStream
    from rnnmnist.training.device import training_precision
    from rnnmnist.training.model import SequenceClassifier
    from rnnmnist.training.optimizer import make_optimizer

    cfg = replace(DEFAULTS, seed=seed)
    if quick:
        cfg = fit_to_length(replace(cfg, iters=40 * 128, hidden_size=16, batch_size=64), ("hidden_size", "batch_size"))
    cfg = replace(cfg, precision=training_precision(cfg.precision, torch.device("cpu")))
    torch.manual_seed(seed)
    model = SequenceClassifier(cfg.model)
    if "reject" in kind:
        model.head = nn.Linear(model.head.in_features, 11)
    optimizer = make_optimizer(cfg, model, torch.device("cpu"))
    total = steps or cfg.training_steps(train_u8.shape[0])
    stream = BatchStream(train_u8.shape[0], cfg.batch_size, seed, torch.device("cpu"))
    g = torch.Generator().manual_seed(seed + 1000)
    return Trainer(kind, cfg, model, optimizer, stream, train_u8, train_y, g, total, oe_size, oe_weight, writers_share)


def train(kind: str, train_u8, train_y, seed: int, a) -> tuple[nn.Module, str, float]:
    t = make_trainer(kind, train_u8, train_y, seed, a.steps, a.oe_size, a.oe_weight, a.quick, a.writers_share)
    t.pool_steps, t.reuse = a.pool_steps, a.reuse
    t.model.train()
    start = time.perf_counter()
    while t.step < t.total:
        loss = t.run_step()
        if t.step % 100 == 0:
            print(f"  {kind} seed {seed} step {t.step}/{t.total} loss {loss:.3f}", file=sys.stderr, flush=True)
    return t.model, t.cfg.precision, time.perf_counter() - start


def step_cost(kinds: list[str], train_u8, train_y, a, rounds: int = 30, steps: int = 5) -> dict[str, dict[str, float]]:
    """Each kind's training step against plain's, measured in many short alternating rounds (the same machine
    and load) and summarised by the median round, which a burst of another process's work does not move:
    the ratios of wall time and of this process's CPU time, and the seconds per step."""
    trainers = {
        k: make_trainer(k, train_u8, train_y, 0, 10**6, a.oe_size, a.oe_weight, a.quick, a.writers_share) for k in kinds
    }
    for t in trainers.values():
        t.pool_steps, t.reuse = getattr(a, "pool_steps", POOL_STEPS), getattr(a, "reuse", 1)
    wall: dict[str, list[float]] = {k: [] for k in kinds}
    cpu: dict[str, list[float]] = {k: [] for k in kinds}
    for t in trainers.values():  # warm up: the first steps of each batch shape build their kernels
        t.model.train()
        for _ in range(3):
            t.run_step()
    for _ in range(rounds):
        for k, t in trainers.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            for _ in range(steps):
                t.run_step()
            wall[k].append((time.perf_counter() - start) / steps)
            cpu[k].append((time.process_time() - start_cpu) / steps)
    ref = "plain" if "plain" in kinds else kinds[0]
    w = {k: float(np.median(v)) for k, v in wall.items()}
    c = {k: float(np.median(v)) for k, v in cpu.items()}
    return {
        k: {"wall_ratio": w[k] / w[ref], "cpu_ratio": c[k] / c[ref], "wall_s_per_step": w[k], "cpu_s_per_step": c[k]}
        for k in kinds
    }


def generator_cost(train_u8: torch.Tensor, n: int = 32, repeats: int = 20) -> dict[str, float]:
    """CPU seconds to generate ``n`` non-digits and to apply the writer augmentation to a batch of 256."""
    from rnnmnist.training.nondigits import nondigit_batch

    g = torch.Generator().manual_seed(0)
    images = train_u8[:256].float() / 255
    start = time.process_time()
    for _ in range(repeats):
        nondigit_batch(g, n, train_u8)
    made = (time.process_time() - start) / repeats
    start = time.process_time()
    for _ in range(repeats):
        writer_augment(images, g)
    return {f"nondigits_{n}_cpu_s": made, "writer_augment_256_cpu_s": (time.process_time() - start) / repeats}


# --------------------------------------------------------------------------- report


def table(rows: list[dict]) -> str:
    keys = [
        ("rejected non-digits", "rejected non-digits"),
        ("rejected two-digit numbers", "rejected two-digit numbers"),
        ("kept MNIST test", "kept MNIST"),
        ("kept binarised+stretched", "kept bin+str"),
        ("kept thick pen", "kept thick"),
        ("kept thin pen", "kept thin"),
        ("kept small scan", "kept small"),
        ("kept optdigits (test)", "kept optdigits"),
    ]
    head = "| model | method | " + " | ".join(label for _, label in keys) + " |"
    lines = [head, "|" + "---|" * (len(keys) + 2)]
    for row in rows:
        for method, m in row["methods"].items():
            cells = [f"{100 * m[k]:.1f}" if k in m else "-" for k, _ in keys]
            lines.append(f"| {row['model']} | {method} | " + " | ".join(cells) + " |")
    acc_keys = [k for k in rows[0] if k.startswith("accuracy ")] if rows else []
    lines += ["", "| model | " + " | ".join(k.removeprefix("accuracy ") for k in acc_keys) + " | non-digits >0.9 |"]
    lines.append("|" + "---|" * (len(acc_keys) + 2))
    for row in rows:
        cells = [f"{100 * row[k]:.2f}" for k in acc_keys]
        lines.append(f"| {row['model']} | " + " | ".join(cells) + f" | {100 * row['non-digits above 0.9 msp']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, help="a folder holding MNIST/raw (without: --quick's synthetic digits)")
    p.add_argument("--checkpoint", type=Path, action="append", default=[], help="a model to measure (repeatable)")
    p.add_argument("--train", default="", help=f"comma-separated kinds to train here: {', '.join(KINDS)}")
    p.add_argument("--seeds", default="0", help="comma-separated seeds of the models trained here")
    p.add_argument("--steps", type=int, help="training steps (default: the default recipe's)")
    p.add_argument("--oe-size", type=int, default=32, help="generated non-digits added to each batch [32]")
    p.add_argument("--oe-weight", type=float, default=0.5, help="weight of the uniform-target loss [0.5]")
    p.add_argument("--writers-share", type=float, default=0.5, help="share of each batch given a writer's look [0.5]")
    p.add_argument(
        "--pool-steps", type=int, default=POOL_STEPS, help=f"steps of non-digits made at once [{POOL_STEPS}]"
    )
    p.add_argument("--reuse", type=int, default=1, help="times each generated non-digit is used [1]")
    p.add_argument("--tag", default="", help="appended to the names of the models trained here")
    p.add_argument("--step-cost", default="", help="comma-separated kinds: time a training step of each vs plain")
    p.add_argument("--save", type=Path, help="save the models trained here (state dicts) into this folder")
    p.add_argument("--load", type=Path, action="append", default=[], help="a state dict saved by --save")
    p.add_argument("--json", type=Path, help="write every figure as JSON lines here")
    p.add_argument("--quick", action="store_true", help="smoke run: tiny models and sets (seconds, not minutes)")
    a = p.parse_args()
    kinds = [k for k in a.train.split(",") if k]
    if any(k not in KINDS for k in kinds + [k for k in a.step_cost.split(",") if k]):
        p.error(f"--train/--step-cost: choose from {', '.join(KINDS)}")
    if a.data_dir is None and not a.quick:
        p.error("--data-dir is needed (or --quick)")
    torch.manual_seed(0)
    if a.step_cost:  # first, on the training data alone: building the evaluation sets takes minutes
        train_u8, train_y = _training_data(a)
        ratio = step_cost(a.step_cost.split(","), train_u8, train_y, a) | {"generator": generator_cost(train_u8)}
        print(json.dumps({"step_cost": ratio}))
        _write(a.json, {"step_cost": ratio})
        if not (a.checkpoint or a.load or kinds):
            return
    sets, train_u8, train_y = build_sets(a.data_dir, a.quick)
    reasons = {"val": image_checks(sets.val), "val_mix": image_checks(sets.val_mix)} | {
        k: image_checks(x) for k, (x, _) in {**sets.kept, **sets.rejected}.items()
    }
    checks_row = {k: float((r != "").mean()) for k, r in reasons.items()}
    print(json.dumps({"image checks refuse": checks_row}))
    _write(a.json, {"image checks refuse": checks_row})
    rows = []
    for path in a.checkpoint:
        from rnnmnist.training.checkpoint import load_model

        model, ckpt = load_model(path)
        rows.append(evaluate_model(str(path), model, ckpt.config.precision, sets, reasons))
        _write(a.json, rows[-1])
    for path in a.load:
        model, precision = _load_state(path)
        rows.append(evaluate_model(path.stem, model, precision, sets, reasons))
        _write(a.json, rows[-1])
    for kind in kinds:
        for seed in (int(s) for s in a.seeds.split(",")):
            model, precision, seconds = train(kind, train_u8, train_y, seed, a)
            if a.save:
                a.save.mkdir(parents=True, exist_ok=True)
                torch.save({"kind": kind, "precision": precision, "hidden": model.head.in_features,
                            "state": model.state_dict()}, a.save / f"{kind}{a.tag}-{seed}.pt")  # fmt: skip
            rows.append(evaluate_model(f"{kind}{a.tag} s{seed}", model, precision, sets, reasons))
            rows[-1]["train_seconds_under_load"] = seconds
            _write(a.json, rows[-1])
            print(table(rows[-1:]), flush=True)
    if rows:
        print(table(rows))


def _training_data(a) -> tuple[torch.Tensor, torch.Tensor]:
    """The training images (uint8) and labels that the models here train on: MNIST train after its val split."""
    if a.data_dir is None:
        from rnnmnist.training.synthetic import synthetic_digits

        images, labels = synthetic_digits(1200, 2)
        return images[500:], labels[500:]
    from rnnmnist.training.data import load_split

    full = load_split(a.data_dir, "train", 0, download=False)
    return full.images[5000:], full.labels[5000:]


def _load_state(path: Path) -> tuple[nn.Module, str]:
    from rnnmnist.config import DEFAULTS
    from rnnmnist.training.model import SequenceClassifier

    saved = torch.load(path, weights_only=True)
    model = SequenceClassifier(replace(DEFAULTS, hidden_size=saved["hidden"]).model)
    if "reject" in saved["kind"]:
        model.head = nn.Linear(model.head.in_features, 11)
    model.load_state_dict(saved["state"])
    return model, saved["precision"]


def _write(path: Path | None, row: dict) -> None:
    if path is not None:
        with path.open("a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
