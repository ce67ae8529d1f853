"""Reading a recording for a trained model: what `partita apply` separates, and a query-by-example model's query."""

from __future__ import annotations

from pathlib import Path

import torch

from components.errors import PartitaError


def read_audio(path: Path, sample_rate: int) -> torch.Tensor:
    """A recording as mono float32 [samples] at `sample_rate` (channels averaged, resampled with torchaudio)."""
    import soundfile
    import torchaudio

    try:
        audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError) as err:
        raise PartitaError(f"{path} is not audio that libsndfile reads ({err})", "convert it to WAV or FLAC, e.g. ffmpeg -i IN OUT.wav") from None
    if not len(audio):
        raise PartitaError(f"{path} holds no samples", "pass a recording at least a second long")
    mono = torch.from_numpy(audio.mean(axis=1))
    return torchaudio.functional.resample(mono, rate, sample_rate) if rate != sample_rate else mono
