"""f_MSS: separate one instrument from the mixture, told which instrument and what it plays.

A U-Net (components.models.unet, FiLM-conditioned on the instrument) predicts a sigmoid
mask on |STFT| of the mixture. The instrument's frame roll [B, 88, T] (from f_T, or the
ground truth for the upper bound) is mapped to the frequency axis by a learned linear map
g: 88 -> F per frame (rolls and STFT frames share 100 frames/s) and merged with the
normalised magnitude X:
- sum: X + g(Y);
- concat: X and g(Y) as two input channels;
- spec_patch: sigmoid(g(Y)) * (X + g(Y)), the roll's patch gating the sum (our reading of
  the paper's "mask applied to the sum"; the authors' code has no spec patch).
The loss is on the waveform: the masked magnitude takes the mixture's phase through the
inverse STFT (L1, as the authors' code).
"""

from __future__ import annotations

import torch
from torch import nn

from components.models.jointist.config import N_KEYS, SeparatorConfig
from components.models.unet import UNet


def straight_through(posterior: torch.Tensor, threshold: float) -> torch.Tensor:
    """Forward: the roll binarised at `threshold`; backward: the identity, so f_T still gets the separation's gradient."""
    binary = (posterior > threshold).to(posterior.dtype)
    return posterior + (binary - posterior).detach()


def roll_input(posterior: torch.Tensor, config: SeparatorConfig) -> torch.Tensor:
    """The roll f_MSS sees: the posteriorgram, or binarised (no gradient into f_T unless through the STE)."""
    if config.roll == "posterior":
        return posterior
    if config.ste:
        return straight_through(posterior, config.threshold)
    return (posterior.detach() > config.threshold).to(posterior.dtype)


class Separator(nn.Module):
    """mix_mag [B, F, T] x instrument [B] (x roll [B, 88, T]) -> the instrument's magnitude estimate [B, F, T].

    `informed` False is "S only": no roll input, the instrument alone conditions the U-Net.
    """

    def __init__(self, config: SeparatorConfig, bins: int, classes: int, informed: bool = True):
        super().__init__()
        self.merge = config.merge if informed else None
        self.norm = nn.BatchNorm1d(bins)  # per bin, as the authors' code: magnitudes span decades across frequency
        self.roll_to_bins = nn.Linear(N_KEYS, bins) if informed else None
        self.unet = UNet(2 if self.merge == "concat" else 1, 1, config.channels, conditions=classes)

    def forward(self, mix_mag: torch.Tensor, instrument: torch.Tensor, roll: torch.Tensor | None = None) -> torch.Tensor:
        if (roll is None) != (self.roll_to_bins is None):
            raise ValueError("an informed separator needs a roll; an uninformed one (S only) takes none")
        x = self.norm(mix_mag)
        if roll is None:
            h = x.unsqueeze(1)
        else:
            g = self.roll_to_bins(roll.transpose(1, 2)).transpose(1, 2)  # [B, F, T]
            if self.merge == "sum":
                h = (x + g).unsqueeze(1)
            elif self.merge == "concat":
                h = torch.stack([x, g], dim=1)
            else:
                h = (torch.sigmoid(g) * (x + g)).unsqueeze(1)
        mask = torch.sigmoid(self.unet(h, instrument)).squeeze(1)
        return mask * mix_mag


def with_mixture_phase(magnitude: torch.Tensor, mixture: torch.Tensor, n_fft: int, hop_length: int) -> torch.Tensor:
    """Waveforms [B, samples] from magnitudes [B, F, T] and the mixture's [B, samples] phase (Hann, centred)."""
    window = torch.hann_window(n_fft, device=mixture.device, dtype=mixture.dtype)
    spectrum = torch.stft(mixture, n_fft, hop_length, window=window, center=True, return_complex=True)
    if spectrum.shape[-2:] != magnitude.shape[-2:]:
        raise ValueError(f"magnitude {tuple(magnitude.shape[-2:])} and mixture STFT {tuple(spectrum.shape[-2:])} differ in (bins, frames)")
    phase = spectrum / spectrum.abs().clamp_min(1e-8)
    return torch.istft(magnitude * phase, n_fft, hop_length, window=window, center=True, length=mixture.shape[-1])


def waveform_loss(magnitude: torch.Tensor, mixture: torch.Tensor, target: torch.Tensor, n_fft: int, hop_length: int) -> torch.Tensor:
    """L1 between the estimate (mixture phase) and the target waveform [B, samples]."""
    return (with_mixture_phase(magnitude, mixture, n_fft, hop_length) - target).abs().mean()
