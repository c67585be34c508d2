"""The network: a torch.nn recurrent layer reads an image as a sequence, a linear head classifies.

The model takes images as float32 (N, 28, 28) in [0, 1]; turning them into a
sequence (rows, pixels, or permuted pixels) happens inside, so every caller
(training, eval, predict, export) feeds the same thing.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from rnnmnist.config import ModelConfig
from rnnmnist.errors import RnnmnistError
from rnnmnist.training.datasets import IMAGE_SIZE, NUM_CLASSES

# Gate blocks per cell in torch's weight layout; the LSTM's are (input, forget, cell, output).
GATES = {"lstm": 4, "gru": 3, "rnn": 1}
RNN_CLASSES = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


def sequence_shape(mode: str) -> tuple[int, int]:
    """(steps, features per step) for a mode."""
    pixels = IMAGE_SIZE * IMAGE_SIZE
    return (IMAGE_SIZE, IMAGE_SIZE) if mode == "rows" else (pixels, 1)


def fixed_permutation(seed: int) -> torch.Tensor:
    """The pixel order of pMNIST: (784,) int64, the same for every run with the same ``seed``."""
    return torch.randperm(IMAGE_SIZE * IMAGE_SIZE, generator=torch.Generator().manual_seed(seed))


class SequenceClassifier(nn.Module):
    """Recurrent classifier over an image read as a sequence, from the last step's hidden state."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.mode, self.cell = cfg.mode, cfg.cell
        self.directions = 2 if cfg.bidirectional else 1
        _, features = sequence_shape(cfg.mode)
        self.rnn = RNN_CLASSES[cfg.cell](
            input_size=features,
            hidden_size=cfg.hidden_size,
            num_layers=cfg.layers,
            batch_first=True,
            # torch applies this dropout only between layers; one layer would only warn.
            dropout=cfg.dropout if cfg.layers > 1 else 0.0,
            bidirectional=cfg.bidirectional,
        )
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.hidden_size * self.directions, NUM_CLASSES)
        if cfg.mode == "permuted":
            self.register_buffer("permutation", fixed_permutation(cfg.permutation_seed))
        init_weights(self, cfg)

    def to_sequence(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 28, 28) -> (N, steps, features)."""
        if self.mode == "rows":
            return images  # (N, 28 steps, 28 features): the rows, top to bottom
        pixels = images.reshape(images.shape[0], -1)  # (N, 784)
        if self.mode == "permuted":
            pixels = pixels[:, self.permutation]
        return pixels.unsqueeze(-1)  # (N, 784 steps, 1 feature)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (N, 10) for images (N, 28, 28) float in [0, 1]."""
        _, state = self.rnn(self.to_sequence(images))
        h_n = state[0] if self.cell == "lstm" else state  # (layers * directions, N, H)
        # The top layer's final state per direction; for one direction it equals output[:, -1].
        last = h_n[-self.directions :].transpose(0, 1).reshape(h_n.shape[1], -1)  # (N, directions * H)
        return self.head(self.dropout(last))  # (N, 10)

    def step_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Logits after every step (N, steps, 10): the head applied to each step's output.

        The last step's equals :meth:`forward`. A bidirectional model is refused: its
        backward direction has already read the whole image at every step, so "what it
        thinks after t steps" has no meaning there.
        """
        if self.directions != 1:
            raise RnnmnistError("a reading trace needs a one-directional model; this one is bidirectional")
        output, _ = self.rnn(self.to_sequence(images))  # (N, steps, H): the top layer at every step
        return self.head(self.dropout(output))  # (N, steps, 10)


def init_weights(model: SequenceClassifier, cfg: ModelConfig) -> None:
    """Apply the ``torch`` or ``tf`` scheme, then the LSTM forget-gate bias.

    ``tf`` is TF1's BasicLSTMCell under tf.glorot_uniform: one kernel over
    [input; hidden] -> gates * hidden, glorot-uniform as a whole, zero biases;
    the notebook's head weight and bias are tf.random_normal, i.e. N(0, 1).
    """
    rnn, gates, hidden = model.rnn, GATES[cfg.cell], cfg.hidden_size
    with torch.no_grad():
        for name, param in rnn.named_parameters():
            if cfg.init == "tf":
                if name.startswith("weight_ih"):
                    # fan_in of the joint kernel is this layer's input plus the hidden state.
                    limit = math.sqrt(6.0 / (param.shape[1] + hidden + gates * hidden))
                    param.uniform_(-limit, limit)
                    rnn.get_parameter(name.replace("weight_ih", "weight_hh")).uniform_(-limit, limit)
                elif name.startswith("bias"):
                    param.zero_()
            if cfg.cell == "lstm" and name.startswith("bias_ih"):
                # BasicLSTMCell adds forget_bias to the forget gate; torch keeps it in the bias.
                param[hidden : 2 * hidden] += cfg.forget_bias
        if cfg.init == "tf":
            nn.init.normal_(model.head.weight)
            nn.init.normal_(model.head.bias)


def training_bytes(cfg: ModelConfig, batch_size: int) -> int:
    """About how much memory training ``cfg`` takes: weights, gradients and Adam's two moments, plus
    the activations autograd keeps for a batch. Counted on the meta device, so nothing is allocated."""
    with torch.device("meta"):
        parameters = sum(p.numel() for p in SequenceClassifier(cfg).parameters())
    steps, _ = sequence_shape(cfg.mode)
    directions = 2 if cfg.bidirectional else 1
    # Per step, layer and direction autograd keeps the gates and the cell/hidden states (~gates + 3 vectors).
    kept = batch_size * steps * cfg.layers * directions * cfg.hidden_size * (GATES[cfg.cell] + 3)
    return 4 * (4 * parameters + kept)
