"""Aligned snippets of a piano-domains set for Kelz's denoiser: V_S (any piano) beside V_T (the canonical piano).

Every rendering of a split is paired with the canonical rendering of the same piece
(same MIDI, so the frames align one to one) and cut into snippets of `frames` frames
every `hop` frames (Kelz: 256 x 256 snippets, hop 128). The spectrograms stay in
memory as float16 as stored (a 160-piece set is about 0.7 GB), the canonical one
once per piece; a batch is cut from them on demand. The split interface is the one
the generic trainer reads chord sets through: `len`, `batch(index)`, `batches(size, limit)`.

Batches: source, target float32 [B, 1, n_mels, frames] linear-magnitude mel.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from components.data.manifest import read_manifest
from components.data.multitrack.rolls import KEYS, LOWEST
from components.data.pianos.reader import dictionary, renderings
from components.errors import PartitaError
from components.schema import StrictModel

KIND = "piano-domains"
CANONICAL = "canonical"


class SnippetConfig(StrictModel):
    frames: int = Field(256, gt=0, description="frames per snippet (Kelz: 256)")
    hop: int = Field(128, gt=0, description="frames between snippet starts (Kelz: 128)")
    scheme: Literal["all", "no-overlap"] = Field("all", description="no-overlap: no train rendering of a test piece")


def snippet_starts(n_frames: int, frames: int, hop: int) -> np.ndarray:
    """Starts of the whole snippets of a piece; a piece shorter than one snippet gives one, padded with silence."""
    return np.arange(0, max(n_frames - frames, 0) + 1, hop)


def check_piano_domains(path: Path, family: str) -> dict:
    manifest = read_manifest(path)
    if manifest.get("kind") != KIND:
        raise PartitaError(
            f"model family {family} needs a piano-domains data set, but {Path(path).name} is a {manifest.get('kind')} data set",
            "pass --dataset piano-domains",
        )
    return manifest


class SnippetSplit:
    def __init__(self, sources: list[torch.Tensor], targets: list[torch.Tensor], config: SnippetConfig):
        self.sources, self.targets, self.frames = sources, targets, config.frames
        self.index = np.array(
            [(i, start) for i, s in enumerate(sources) for start in snippet_starts(s.shape[1], config.frames, config.hop)], np.int64
        ).reshape(-1, 2)

    def __len__(self) -> int:
        return len(self.index)

    def _cut(self, spectrogram: torch.Tensor, start: int) -> torch.Tensor:
        snippet = spectrogram[:, start : start + self.frames].float()
        return torch.nn.functional.pad(snippet, (0, self.frames - snippet.shape[1]))

    def batch(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        chosen = self.index[np.asarray(index, np.int64)]
        return {
            "source": torch.stack([self._cut(self.sources[i], s) for i, s in chosen])[:, None],
            "target": torch.stack([self._cut(self.targets[i], s) for i, s in chosen])[:, None],
        }

    def batches(self, batch_size: int, limit: int | None = None):
        n = len(self) if limit is None else min(limit, len(self))
        for start in range(0, n, batch_size):
            yield self.batch(torch.arange(start, min(start + batch_size, n)))


class PianoSnippets:
    """A built piano-domains set as aligned snippets: `.spec`, `.split(name)`, `.dictionary` (D_T)."""

    def __init__(self, path: Path, config: SnippetConfig, family: str = "kelz"):
        from components.data.spec import DataSpec

        self.path, self.config = Path(path), config
        manifest = check_piano_domains(self.path, family)
        n_mels = manifest["recipe"]["pianos"]["n_mels"]
        self.spec = DataSpec(input_shape=(1, n_mels, config.frames), pitches=tuple(range(LOWEST, LOWEST + KEYS)), programs=(), max_notes=0)
        self.canonical = {r.piece_id: torch.from_numpy(r.mel.astype(np.float16)) for r in renderings(self.path, CANONICAL)}
        self._splits: dict[str, SnippetSplit] = {}

    @property
    def dictionary(self) -> np.ndarray:
        return dictionary(self.path)

    def split(self, name: str) -> SnippetSplit:
        if name not in self._splits:
            pairs = [(torch.from_numpy(r.mel.astype(np.float16)), self.canonical[r.piece_id]) for r in renderings(self.path, name, self.config.scheme)]
            if not pairs:
                raise PartitaError(f"{self.path.name} has no {name} renderings", "build the set with pianos for that split")
            self._splits[name] = SnippetSplit([s for s, _ in pairs], [t for _, t in pairs], self.config)
        return self._splits[name]
