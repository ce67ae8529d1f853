"""What the mask-based separation families share: masks on the mixture's STFT with its phase, and the
SDR / SI-SDR / SI-SDRi of the resulting waveforms gathered over a split."""

from __future__ import annotations

import numpy as np
import torch

from components.data.multitrack.featurize import ViewFeaturizer
from components.metrics.separation import sdr, si_sdr, si_sdr_improvement


def masked_waveforms(featurizer: ViewFeaturizer, masks: torch.Tensor, spec: torch.Tensor, samples: int) -> torch.Tensor:
    """Masks [B, S, F, T] on the mixture STFT [B, F, T], inverted with the mixture's phase -> waveforms [B, S, samples]."""
    return featurizer.istft(masks.float() * spec.unsqueeze(1), samples)


class SeparationScores:
    """SDR, SI-SDR and SI-SDRi of estimates [B, S, samples] per example and source, gathered batch by batch.

    A reference silent over a whole segment has no score (NaN); the means leave it out.
    """

    NAMES = ("sdr", "si_sdr", "si_sdri")

    def __init__(self):
        self._parts: dict[str, list[np.ndarray]] = {name: [] for name in self.NAMES}

    def add(self, estimates: torch.Tensor, mixture: torch.Tensor, references: torch.Tensor) -> None:
        self._parts["sdr"].append(sdr(estimates, references))
        self._parts["si_sdr"].append(si_sdr(estimates, references))
        self._parts["si_sdri"].append(si_sdr_improvement(estimates, mixture.unsqueeze(1).expand_as(references), references))

    def __getitem__(self, name: str) -> np.ndarray:
        """All scores of one kind, [examples, S]."""
        return np.concatenate(self._parts[name])

    def means(self) -> dict[str, float]:
        return {name: float(np.nanmean(self[name])) for name in self.NAMES}
