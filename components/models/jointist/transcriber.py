"""f_T: Onsets-and-Frames-style transcription of one instrument, chosen through FiLM.

Kong et al.'s layout as the authors' code has it: an onset CRNN and a frame CRNN side by
side on the log-mel (4 conv blocks, avg-pool over frequency only, so time keeps its 100
frames/s -> linear -> BiGRU -> 88 keys), then a BiGRU over frame (+) onset.detach() for the
final frame roll. FiLM after every BatchNorm of both CRNNs; the authors' code uses a shift
only, the paper cites full FiLM: we use scale and shift (components.models.unet.FiLM).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from components.models.jointist.config import N_KEYS, TranscriberConfig
from components.models.unet import FiLM


class ConditionedConvBlock(nn.Module):
    """[3x3 conv -> BatchNorm -> FiLM -> ReLU] x 2 -> avg-pool (1, 2) on frequency -> dropout; x is [B, C, T, F]."""

    def __init__(self, c_in: int, c_out: int, classes: int, dropout: float):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)])
        self.norms = nn.ModuleList([nn.BatchNorm2d(c_out), nn.BatchNorm2d(c_out)])
        self.films = nn.ModuleList([FiLM(classes, c_out), FiLM(classes, c_out)])
        self.tail = nn.Sequential(nn.AvgPool2d((1, 2)), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, instrument: torch.Tensor) -> torch.Tensor:
        for conv, norm, film in zip(self.convs, self.norms, self.films):
            x = torch.relu(film(norm(conv(x)), instrument))
        return self.tail(x)


class ConditionedCRNN(nn.Module):
    """log-mel [B, T, n_mels] x instrument [B] -> logits [B, T, 88]."""

    def __init__(self, config: TranscriberConfig, n_mels: int, classes: int):
        super().__init__()
        widths = [1, *config.channels]
        self.blocks = nn.ModuleList(ConditionedConvBlock(a, b, classes, config.dropout) for a, b in zip(widths[:-1], widths[1:]))
        bins = n_mels >> len(config.channels)
        if bins < 1:
            raise ValueError(f"{n_mels} mel bins do not survive {len(config.channels)} frequency poolings; use more bins or fewer transcriber.channels")
        self.embed = nn.Sequential(nn.Linear(config.channels[-1] * bins, config.embedding), nn.ReLU(), nn.Dropout(config.dropout))
        self.gru = nn.GRU(config.embedding, config.hidden, batch_first=True, bidirectional=True)
        self.out = nn.Linear(2 * config.hidden, N_KEYS)

    def forward(self, frames: torch.Tensor, instrument: torch.Tensor) -> torch.Tensor:
        h = frames.unsqueeze(1)
        for block in self.blocks:
            h = block(h, instrument)
        h = self.embed(h.transpose(1, 2).flatten(2))  # [B, T, C * F']
        return self.out(self.gru(h)[0])


class Transcriber(nn.Module):
    """log-mel [B, n_mels, T] x instrument [B] -> {"onset", "frame"}: logits [B, 88, T] (the data's roll layout)."""

    def __init__(self, config: TranscriberConfig, n_mels: int, classes: int):
        super().__init__()
        self.norm = nn.BatchNorm1d(n_mels)
        self.onset_model = ConditionedCRNN(config, n_mels, classes)
        self.frame_model = ConditionedCRNN(config, n_mels, classes)
        self.final_gru = nn.GRU(2 * N_KEYS, config.hidden, batch_first=True, bidirectional=True)
        self.final = nn.Sequential(nn.Dropout(0.5), nn.Linear(2 * config.hidden, N_KEYS))
        for layer, prior in ((self.onset_model.out, config.onset_prior), (self.frame_model.out, config.frame_prior), (self.final[-1], config.frame_prior)):
            if prior is not None:
                nn.init.constant_(layer.bias, math.log(prior / (1 - prior)))

    def forward(self, logmel: torch.Tensor, instrument: torch.Tensor) -> dict[str, torch.Tensor]:
        frames = self.norm(logmel).transpose(1, 2)  # [B, T, n_mels]
        onset = self.onset_model(frames, instrument)
        frame = self.frame_model(frames, instrument)
        # Onsets inform the frame roll but are trained by their own loss only (Kong et al.).
        joint = torch.cat([torch.sigmoid(frame), torch.sigmoid(onset).detach()], dim=-1)
        frame = self.final(self.final_gru(joint)[0])
        return {"onset": onset.transpose(1, 2), "frame": frame.transpose(1, 2)}


def transcription_loss(logits: dict[str, torch.Tensor], onsets: torch.Tensor, frames: torch.Tensor, config: TranscriberConfig) -> torch.Tensor:
    """BCE(onset) + BCE(frame), each roll's positive cells weighted by its config weight (1: the paper's plain BCE);
    targets [B, 88, T] in {0, 1} (all zero for an absent instrument)."""
    bce = nn.functional.binary_cross_entropy_with_logits
    weight = {"onset": config.onset_positive_weight, "frame": config.frame_positive_weight}
    return sum(bce(logits[roll], target.float(), pos_weight=logits[roll].new_tensor(weight[roll])) for roll, target in (("onset", onsets), ("frame", frames)))
