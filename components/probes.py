"""The note-property probe: linear classifiers on frozen representations (the paper's Table 2).

Per-note representations (MusicSlots' matched slots) get a linear classifier
with a pitch head and an instrument head (cross-entropy); per-chord ones (an
autoencoder's latent) a linear layer predicting the instrument x pitch
multi-hot (sigmoid, BCE). Either way a chord counts as correct only if every
note's pitch and instrument are right.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from components.errors import PartitaError
from components.models.autoencoders import chord_accuracy, multi_hot
from components.models.base import DataSpec, ModelFamily
from components.schema import StrictModel


class ProbeConfig(StrictModel):
    """The paper's Table 12 schedule."""

    steps: int = Field(10000, gt=0)
    batch_size: int = Field(32, gt=0)
    lr: float = Field(1e-3, gt=0)


@dataclass
class ProbeSplit:
    features: torch.Tensor  # [n, N, D] per note or [n, D] per chord
    pitch: torch.Tensor  # [n, N] vocabulary indices
    program: torch.Tensor  # [n, N]
    valid: torch.Tensor  # [n, N] real notes
    matched: torch.Tensor | None  # [n, N] notes with a feature (per-note representations)

    @property
    def per_note(self) -> bool:
        return self.matched is not None

    def __len__(self) -> int:
        return len(self.features)


def check_probe_data(spec: DataSpec, name: str) -> None:
    if spec.n_programs < 2:
        raise PartitaError(
            f"data set {name!r} has a single instrument, so it carries no instrument labels to probe",
            "probe on a multi-instrument data set such as jsb-multi or jazznet-multi",
        )


@torch.no_grad()
def extract(family: ModelFamily, model: nn.Module, batches) -> ProbeSplit:
    """Run the frozen model over batches and keep its representation with the note labels."""
    parts = []
    for batch in batches:
        representation = family.representation(model, batch)
        if representation is None:
            raise PartitaError(
                f"model family {family.name!r} has no representation to probe",
                "probe a run of musicslots, autoencoder or vae (the supervised CNN is scored on its own outputs)",
            )
        parts.append((representation, batch))
    first = parts[0][0]
    return ProbeSplit(
        features=torch.cat([r.features.float().cpu() for r, _ in parts]),
        pitch=torch.cat([b["pitch"] for _, b in parts]),
        program=torch.cat([b["program"] for _, b in parts]),
        valid=torch.cat([b["note_valid"] for _, b in parts]),
        matched=torch.cat([r.matched.cpu() for r, _ in parts]) if first.per_note else None,
    )


class Probe(nn.Module):
    def __init__(self, size: int, n_pitches: int, n_programs: int, per_note: bool):
        super().__init__()
        self.n_pitches, self.n_programs, self.per_note = n_pitches, n_programs, per_note
        if per_note:
            self.pitch, self.program = nn.Linear(size, n_pitches), nn.Linear(size, n_programs)
        else:
            self.notes = nn.Linear(size, n_programs * n_pitches)

    def loss(self, split: ProbeSplit, index: torch.Tensor) -> torch.Tensor:
        features = split.features[index]
        if self.per_note:
            use = split.valid[index] & split.matched[index]
            if not use.any():
                return features.sum() * 0.0
            return F.cross_entropy(self.pitch(features[use]), split.pitch[index][use]) + F.cross_entropy(
                self.program(features[use]), split.program[index][use]
            )
        target = multi_hot(split.pitch[index], split.program[index], split.valid[index], self.n_pitches, self.n_programs)
        return F.binary_cross_entropy_with_logits(self.notes(features), target)

    @torch.no_grad()
    def correct(self, split: ProbeSplit) -> dict[str, torch.Tensor]:
        """Per chord: all notes right; per note (per-note probes): pitch right, instrument right."""
        if not self.per_note:
            target = multi_hot(split.pitch, split.program, split.valid, self.n_pitches, self.n_programs)
            return {"chord": chord_accuracy(self.notes(split.features), target).bool()}
        pitch_ok = (self.pitch(split.features).argmax(-1) == split.pitch) & split.matched
        program_ok = (self.program(split.features).argmax(-1) == split.program) & split.matched
        chord = ((pitch_ok & program_ok) | ~split.valid).all(-1)
        return {"chord": chord, "pitch": pitch_ok[split.valid], "instrument": program_ok[split.valid]}


def train_probe(train: ProbeSplit, spec: DataSpec, config: ProbeConfig, seed: int = 0) -> Probe:
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    probe = Probe(train.features.shape[-1], spec.n_pitches, spec.n_programs, train.per_note)
    optimizer = torch.optim.Adam(probe.parameters(), lr=config.lr)
    for _ in range(config.steps):
        index = torch.randint(len(train), (config.batch_size,), generator=generator)
        loss = probe.loss(train, index)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return probe


def accuracy(probe: Probe, split: ProbeSplit) -> dict[str, float]:
    return {f"{name}_accuracy": float(values.float().mean()) for name, values in probe.correct(split).items()}
