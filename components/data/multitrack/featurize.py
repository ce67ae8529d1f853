"""Features and targets of examples: STFT magnitude and phase (torch.stft), log-mel (torchaudio).

`ViewFeaturizer` is a torch module over batches of examples (dicts of tensors with
a leading batch axis), so the same code runs on a Ray Data CPU actor (through
`featurize_numpy`) or on the trainer's device. What it adds, by what the view asks:

    mix_mag          float32 [B, F, T]     |X|, always (masks apply to it)
    mix_logmel       float32 [B, n_mels, T]  features "logmel": dB mel of |X|^2
    target_mag       float32 [B, S, F, T]  targets "magnitude": |S_i|
    target_psa       float32 [B, S, F, T]  targets "phase_sensitive": clamp(|S_i| cos(angle S_i - angle X), 0, |X|),
                                           the truncated phase-sensitive target of the tPSA loss (manilow.md)
Waveforms (`mixture`, `sources`) are kept when `keep_waveforms` (evaluation, the
"waveform" target); rolls pass through.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import pyarrow.parquet as pq
import torch
import torchaudio

from components.data.multitrack.examples import PIECE_COLUMNS, piece_examples, stack
from components.data.multitrack.reader import Piece, table_pieces
from components.data.multitrack.view import ViewConfig

if TYPE_CHECKING:
    from components.data.spec import ExampleMaker


class ViewFeaturizer(torch.nn.Module):
    def __init__(self, view: ViewConfig, sample_rate: int, keep_waveforms: bool = False):
        super().__init__()
        self.view, self.keep_waveforms = view, keep_waveforms or "waveform" in view.targets
        self.n_fft, self.hop = view.stft.n_fft, view.stft.hop_length
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)
        if "logmel" in view.features:
            self.mel = torchaudio.transforms.MelScale(n_mels=view.mel.n_mels, sample_rate=sample_rate, n_stft=view.bins)

    def stft(self, audio: torch.Tensor) -> torch.Tensor:
        """Complex STFT [..., F, T] of waveforms [..., samples]: Hann window, centred frames, reflect padding."""
        shape = audio.shape
        spec = torch.stft(audio.reshape(-1, shape[-1]), self.n_fft, self.hop, window=self.window, center=True, pad_mode="reflect", return_complex=True)
        return spec.reshape(*shape[:-1], *spec.shape[-2:])

    def istft(self, spec: torch.Tensor, samples: int) -> torch.Tensor:
        shape = spec.shape
        audio = torch.istft(spec.reshape(-1, *shape[-2:]), self.n_fft, self.hop, window=self.window, center=True, length=samples)
        return audio.reshape(*shape[:-2], samples)

    @torch.no_grad()
    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {key: value for key, value in batch.items() if key not in ("mixture", "sources") or self.keep_waveforms}
        mix = self.stft(batch["mixture"].float())
        mix_mag = mix.abs()
        out["mix_mag"] = mix_mag
        if "logmel" in self.view.features:
            power = self.mel(mix_mag.square())
            db = 10.0 * torch.log10(power.clamp_min(1e-10))
            out["mix_logmel"] = torch.maximum(db, db.amax(dim=(-2, -1), keepdim=True) - self.view.mel.top_db)
        if {"magnitude", "phase_sensitive"} & set(self.view.targets):
            sources = self.stft(batch["sources"].float())
            if "magnitude" in self.view.targets:
                out["target_mag"] = sources.abs()
            if "phase_sensitive" in self.view.targets:
                # |S| cos(angle S - angle X) = Re(S conj(X)) / |X|
                aligned = (sources * mix.conj().unsqueeze(-3)).real / mix_mag.clamp_min(1e-8).unsqueeze(-3)
                out["target_psa"] = torch.minimum(aligned.clamp_min(0.0), mix_mag.unsqueeze(-3))
        return out

    def featurize_numpy(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The same on numpy batches (what a Ray Data actor holds)."""
        out = self({key: torch.from_numpy(np.ascontiguousarray(value)) for key, value in batch.items()})
        return {key: value.numpy() for key, value in out.items()}


def example_maker(view: ViewConfig, own: "ExampleMaker | None") -> Callable[[Piece, int, int], list[dict[str, np.ndarray]]]:
    """`make(piece, seed, draw)`: the family's own examples, or else the view's."""
    return own.make if own is not None else lambda piece, seed, draw: piece_examples(piece, view, seed, draw)


class ExampleStage:
    """A Ray Data stage: batches of piece locations {path, row_group[, pass]} -> batches of examples.

    Reads each piece's stems, classes and notes (one row group of a built split:
    one piece), cuts, filters and mixes it (or, given `own_maker`, a zero-argument
    factory of a family's `ExampleMaker` called inside the actor, lets the family make
    its own examples), then featurises
    the view's examples here unless the view featurises on the trainer; a family's own
    examples go out as made. Yields one batch per piece (none for a piece without a
    salient segment), so memory holds one piece at a time.
    """

    def __init__(self, view: dict, seed: int, sample_rate: int, own_maker: "Callable[[], ExampleMaker | None] | None" = None):
        self.view, self.seed = ViewConfig.model_validate(view), seed
        torch.set_num_threads(1)  # one actor per CPU: intra-op threads would only contend
        own = own_maker() if own_maker is not None else None
        self.make = example_maker(self.view, own)
        self.featurizer = ViewFeaturizer(self.view, sample_rate) if own is None and self.view.featurise_on == "data" else None

    def __call__(self, batch: dict[str, np.ndarray]):
        passes = batch.get("pass", np.zeros(len(batch["path"]), np.int64))
        for path, group, index in zip(batch["path"], batch["row_group"], passes):
            # memory-mapped, and the stems (stored uncompressed) taken as Arrow's buffer: reading a piece copies
            # none of its audio (29 -> 5 ms for a 28 MB row group, measured)
            table = pq.ParquetFile(str(path), memory_map=True).read_row_group(int(group), columns=PIECE_COLUMNS)
            for piece in table_pieces(table):
                examples = stack(self.make(piece, self.seed, int(index)))
                if examples:
                    yield self.featurizer.featurize_numpy(examples) if self.featurizer else examples


def piece_locations(paths: list[Path]) -> list[dict]:
    """{path, row_group} of every row group of the given Parquet files, in order (builds write a piece per group)."""
    return [{"path": str(path), "row_group": group} for path in paths for group in range(pq.ParquetFile(path).num_row_groups)]
