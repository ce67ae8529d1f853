"""The BLSTM mask-inference network of Manilow's separation models.

Log-magnitude frames in, one mask per source out: a BLSTM stack over time (units
per direction), then a linear layer per time-frequency bin and a sigmoid (chapter
2) or a softmax across sources (Cerberus). The hierarchical, Cerberus and
score-informed families build on `BLSTMStack` and `MaskHead`; `BLSTMMasker` is
the two together.
"""

from __future__ import annotations

import torch
from torch import nn

LOG_FLOOR = 1e-6  # |X| below this is silence; keeps log finite


def log_magnitude(mix_mag: torch.Tensor) -> torch.Tensor:
    """[B, F, T] -> [B, T, F] log-magnitude frames (the models' input)."""
    return torch.log(mix_mag + LOG_FLOOR).transpose(1, 2)


class BLSTMStack(nn.Module):
    """[B, T, inputs] -> [B, T, 2 * hidden]; dropout between layers, not after the last."""

    def __init__(self, inputs: int, hidden: int, layers: int, dropout: float):
        super().__init__()
        self.norm = nn.BatchNorm1d(inputs)  # log magnitudes span tens of dB: normalise per bin
        self.lstm = nn.LSTM(inputs, hidden, num_layers=layers, dropout=dropout if layers > 1 else 0.0, batch_first=True, bidirectional=True)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        normed = self.norm(frames.transpose(1, 2)).transpose(1, 2)
        return self.lstm(normed)[0]


class MaskHead(nn.Module):
    """[B, T, features] -> masks [B, S, F, T] in [0, 1]: sigmoid per source, or softmax across sources."""

    def __init__(self, features: int, bins: int, sources: int, activation: str):
        super().__init__()
        self.bins, self.sources, self.activation = bins, sources, activation
        self.linear = nn.Linear(features, bins * sources)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        b, t, _ = hidden.shape
        logits = self.linear(hidden).view(b, t, self.sources, self.bins).permute(0, 2, 3, 1)
        return torch.softmax(logits, dim=1) if self.activation == "softmax" else torch.sigmoid(logits)


class BLSTMMasker(nn.Module):
    """Mixture magnitude [B, F, T] -> masks [B, S, F, T]."""

    def __init__(self, bins: int, sources: int, hidden: int, layers: int, dropout: float, activation: str):
        super().__init__()
        self.stack = BLSTMStack(bins, hidden, layers, dropout)
        self.head = MaskHead(2 * hidden, bins, sources, activation)

    def forward(self, mix_mag: torch.Tensor) -> torch.Tensor:
        return self.head(self.stack(log_magnitude(mix_mag)))
