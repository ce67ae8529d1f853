"""f_IR: which instruments play in a clip. Log-mel -> CNN front end -> Transformer encoder -> one logit per class."""

from __future__ import annotations

import torch
from torch import nn

from components.models.jointist.config import RecognizerConfig


def pooled_conv_block(c_in: int, c_out: int, pool: tuple[int, int], dropout: float) -> nn.Sequential:
    """[3x3 conv (stride 1, padding 1) -> BatchNorm -> ReLU] x 2 -> average pool -> dropout."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
        nn.AvgPool2d(pool),
        nn.Dropout(dropout),
    )


class InstrumentRecognizer(nn.Module):
    """log-mel [B, n_mels, T] -> logits [B, classes] (sigmoid per class: several instruments play at once)."""

    def __init__(self, config: RecognizerConfig, n_mels: int, classes: int):
        super().__init__()
        reduction = 2 ** len(config.channels)
        if n_mels < reduction:
            raise ValueError(f"{n_mels} mel bins do not survive {len(config.channels)} 2x2 poolings; use at least {reduction} bins or fewer recognizer.channels")
        self.reduction = reduction
        widths = [1, *config.channels]
        self.frontend = nn.Sequential(*(pooled_conv_block(a, b, (2, 2), config.dropout) for a, b in zip(widths[:-1], widths[1:])))
        self.project = nn.Linear(config.channels[-1] * (n_mels // reduction), config.d_model)
        self.cls = nn.Parameter(torch.zeros(1, 1, config.d_model))
        # No positional encoding: the labels belong to the whole clip, and the CNN already gives each step local context.
        layer = nn.TransformerEncoderLayer(config.d_model, config.heads, config.ffn, config.dropout, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, config.depth, enable_nested_tensor=False)
        self.head = nn.Linear(config.d_model, classes)

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        if logmel.shape[-1] < self.reduction:
            raise ValueError(f"a clip of {logmel.shape[-1]} frames is shorter than the front end's pooling ({self.reduction} frames)")
        h = self.frontend(logmel.unsqueeze(1))  # [B, C, M', T']
        steps = self.project(h.flatten(1, 2).transpose(1, 2))  # [B, T', d_model]
        tokens = torch.cat([self.cls.expand(len(steps), -1, -1), steps], dim=1)
        return self.head(self.encoder(tokens)[:, 0])
