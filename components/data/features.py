"""Mel spectrograms in dB, exactly as the MusicSlots pipeline computes them.

torchaudio's MelSpectrogram with the authors' arguments (others default: power 2,
periodic Hann, centred frames with reflect padding, HTK mel scale, no filter
normalisation), then amplitude_to_DB with reference power 1.0, amin 1e-10 and a
floor 80 dB under each example's maximum, cropped to the first `frames` frames.
"""

from __future__ import annotations

import torch
import torchaudio
from pydantic import Field

from components.schema import StrictModel


class FeatureConfig(StrictModel):
    sample_rate: int = Field(16000, gt=0)
    n_fft: int = Field(1024, gt=0)
    hop_length: int = Field(512, gt=0)
    n_mels: int = Field(128, gt=0)
    frames: int = Field(32, gt=0, description="crop: keep the first `frames` frames")
    top_db: float = Field(80.0, gt=0)
    mask_db: float = Field(-30.0, description="absolute dB threshold of binary note masks")

    @property
    def samples(self) -> int:
        """Waveform length whose first `frames` centred frames need no end padding."""
        return (self.frames - 1) * self.hop_length + self.n_fft // 2


class LogMel(torch.nn.Module):
    """Waveforms [batch, samples] -> dB mel spectrograms [batch, 1, n_mels, frames].

    Split into its linear part (`stft`) and the rest (`db_from_power`) so that a
    mixture's spectrogram can be computed from its sources' STFTs: the STFT of a
    sum is the sum of the STFTs. Together they equal torchaudio's MelSpectrogram
    (Spectrogram with power 2, then MelScale), followed by `power_to_db`.
    """

    def __init__(self, config: FeatureConfig):
        super().__init__()
        self.config = config
        self.spectrogram = torchaudio.transforms.Spectrogram(n_fft=config.n_fft, hop_length=config.hop_length, power=None)
        self.mel_scale = torchaudio.transforms.MelScale(
            n_mels=config.n_mels, sample_rate=config.sample_rate, n_stft=config.n_fft // 2 + 1
        )

    def stft(self, waveforms: torch.Tensor) -> torch.Tensor:
        """Complex STFT [batch, n_fft // 2 + 1, frames] of the first `frames` centred frames."""
        if waveforms.shape[-1] < self.config.samples:
            waveforms = torch.nn.functional.pad(waveforms, (0, self.config.samples - waveforms.shape[-1]))
        return self.spectrogram(waveforms[..., : self.config.samples])[..., : self.config.frames]

    def db_from_power(self, power: torch.Tensor) -> torch.Tensor:
        """Linear-frequency power [batch, n_fft // 2 + 1, frames] -> dB mel [batch, 1, n_mels, frames]."""
        return power_to_db(self.mel_scale(power).unsqueeze(1), self.config.top_db)

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        return self.db_from_power(self.stft(waveforms).abs().pow(2))


def power_to_db(power: torch.Tensor, top_db: float = 80.0) -> torch.Tensor:
    """[batch, channel, freq, time] power -> dB re 1.0, floored top_db under each example's max.

    The channel axis matters: amplitude_to_DB takes the maximum over the last
    three axes, so a [batch, freq, time] input would share one floor across the batch.
    """
    if power.dim() != 4:
        raise ValueError(f"power_to_db expects [batch, channel, freq, time], got shape {tuple(power.shape)}")
    return torchaudio.functional.amplitude_to_DB(power, multiplier=10.0, amin=1e-10, db_multiplier=0.0, top_db=top_db)


def note_masks(db: torch.Tensor, threshold_db: float = -30.0) -> torch.Tensor:
    """Binary masks of time-frequency bins at or above an absolute dB level."""
    return db >= threshold_db
