"""Cerberus (Manilow's dissertation, chapter 3): one BLSTM stack, three heads, one weighted loss.

Heads on the shared stack:
    deep clustering (DC)  a unit-norm embedding per time-frequency bin (sigmoid, then normalised)
    mask inference (MI)   one mask per source, softmax across sources (issue 11's MaskHead), tPSA loss
    transcription (TR)    88 pitches per source, sigmoid, MSE to the binary roll of notes with velocity > 30
Loss alpha L_DC + beta L_MI + gamma L_TR. A head is switched off by its weight alone: the architecture
(and so the initial weights for a given seed) is the same for every weighting, which is what makes the
loss-weight ablation a comparison from one starting point.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from pydantic import Field, model_validator
from torch import nn

from components.data.multitrack.rolls import KEYS
from components.data.multitrack.segments import SegmentConfig
from components.data.multitrack.view import ViewConfig
from components.losses.clustering import deep_clustering_loss, dominant_source, loud_bins
from components.losses.separation import tpsa_loss
from components.models.base import Batch, ModelConfig
from components.models.masker import BLSTMStack, MaskHead, log_magnitude
from components.schema import StrictModel


class LossWeights(StrictModel):
    """(alpha, beta, gamma) of Table 3.1; Cerberus is (0.1, 0.1, 0.8)."""

    dc: float = Field(0.1, ge=0, description="alpha: deep clustering")
    mi: float = Field(0.1, ge=0, description="beta: mask inference (tPSA)")
    tr: float = Field(0.8, ge=0, description="gamma: transcription (MSE)")

    @model_validator(mode="after")
    def _some_head(self) -> "LossWeights":
        if self.dc + self.mi + self.tr <= 0:
            raise ValueError("all loss weights are 0, so nothing would be trained; give at least one of dc, mi, tr a positive weight")
        return self

    def items(self) -> tuple[tuple[str, float], ...]:
        return (("dc", self.dc), ("mi", self.mi), ("tr", self.tr))


# the chapter's source sets (2: piano + guitar, then + bass, + drums, + strings) as jointist-39 classes;
# Slakh's "guitar" is jointist-39's Electric Guitar or Acoustic Guitar: the electric one is the commoner in slakh-like pieces
SOURCE_ORDER = ("Piano", "Electric Guitar", "Bass", "Drums", "Strings")
SOURCE_SETS = {count: SOURCE_ORDER[:count] for count in range(2, len(SOURCE_ORDER) + 1)}


def cerberus_view(sources: int = 2) -> ViewConfig:
    """5 s segments where every chosen source has >= 10 onsets above velocity 30, with the targets all three heads need."""
    return ViewConfig(
        segment=SegmentConfig(seconds=5.0, hop_seconds=5.0, min_onsets=10, onset_velocity=30),
        sources=sources,
        classes=list(SOURCE_SETS[sources]),
        targets=["phase_sensitive", "magnitude"],
        conditioning=["rolls"],
    )


class CerberusConfig(ModelConfig):
    family: Literal["cerberus"] = "cerberus"
    hidden: int = Field(300, gt=0, description="BLSTM units per direction")
    layers: int = Field(4, gt=0)
    dropout: float = Field(0.3, ge=0, lt=1)
    embedding: int = Field(20, gt=0, description="deep-clustering embedding per bin")
    dc_floor_db: float = Field(-40.0, lt=0, description="DC loss over bins louder than this re the mixture's maximum (silent bins have no dominant source)")
    weights: LossWeights = LossWeights()
    view: ViewConfig = Field(default_factory=cerberus_view)


class CerberusOutput(NamedTuple):
    embedding: torch.Tensor  # [B, F, T, D], unit norm per bin
    masks: torch.Tensor  # [B, S, F, T], sum to one over S
    rolls: torch.Tensor  # [B, S, 88, T], in [0, 1]


class CerberusNet(nn.Module):
    def __init__(self, config: CerberusConfig, bins: int, sources: int):
        super().__init__()
        self.sources, self.embedding_dim = sources, config.embedding
        self.stack = BLSTMStack(bins, config.hidden, config.layers, config.dropout)
        self.dc = nn.Linear(2 * config.hidden, bins * config.embedding)
        self.mi = MaskHead(2 * config.hidden, bins, sources, "softmax")
        self.tr = nn.Linear(2 * config.hidden, sources * KEYS)

    def forward(self, mix_mag: torch.Tensor) -> CerberusOutput:
        b, f, t = mix_mag.shape
        hidden = self.stack(log_magnitude(mix_mag))  # [B, T, 2H]
        embedding = torch.sigmoid(self.dc(hidden).view(b, t, f, self.embedding_dim)).transpose(1, 2)
        rolls = torch.sigmoid(self.tr(hidden).view(b, t, self.sources, KEYS)).permute(0, 2, 3, 1)
        return CerberusOutput(nn.functional.normalize(embedding, dim=-1), self.mi(hidden), rolls)


def cerberus_losses(output: CerberusOutput, batch: Batch, config: CerberusConfig) -> dict[str, torch.Tensor]:
    """Each head's loss on a batch holding mix_mag, target_mag, target_psa and velocity rolls [B, S, 88, T]."""
    weights = loud_bins(batch["mix_mag"], config.dc_floor_db)
    return {
        "dc": deep_clustering_loss(output.embedding.float(), dominant_source(batch["target_mag"]), weights),
        "mi": tpsa_loss(output.masks.float(), batch["mix_mag"], batch["target_psa"]),
        "tr": nn.functional.mse_loss(output.rolls.float(), (batch["rolls"] > config.view.segment.onset_velocity).float()),
    }


def weighted_loss(losses: dict[str, torch.Tensor], weights: LossWeights) -> torch.Tensor:
    """alpha L_DC + beta L_MI + gamma L_TR over the heads with a positive weight only, so a head at 0 gets no
    gradient at all (not even a NaN times zero)."""
    return sum(weight * losses[head] for head, weight in weights.items() if weight > 0)


def transcribe(rolls: torch.Tensor, classes: tuple[str, ...], threshold: float = 0.8, drum_threshold: float = 0.1, drums: str = "Drums") -> torch.Tensor:
    """Binary rolls [B, S, 88, T] from the TR head: 0.8, or 0.1 for the drum source (ch. 3)."""
    thresholds = torch.tensor([drum_threshold if name == drums else threshold for name in classes], device=rolls.device)
    return rolls > thresholds.view(1, -1, 1, 1)

