"""Reading built piano-domain data sets: a rendering at a time, and the canonical note dictionary."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from components.data.multitrack.rolls import KEYS, NoteTable
from components.data.splits import rows
from components.errors import PartitaError


@dataclass
class PianoRendering:
    example_id: int
    piece_id: int
    piece: str
    piano: str
    overlap: bool
    seconds: float
    mel: np.ndarray  # float32 [n_mels, frames]
    roll: np.ndarray  # uint8 [88, frames]
    notes: NoteTable


def rendering_from_row(row: dict) -> PianoRendering:
    return PianoRendering(
        example_id=row["example_id"],
        piece_id=row["piece_id"],
        piece=row["piece"],
        piano=row["piano"],
        overlap=row["overlap"],
        seconds=row["seconds"],
        mel=np.frombuffer(row["mel"], "<f2").reshape(-1, row["n_frames"]).astype(np.float32),
        roll=np.frombuffer(row["roll"], np.uint8).reshape(KEYS, row["n_frames"]),
        notes=NoteTable.from_columns(row),
    )


def renderings(dataset_dir: Path, split: str, scheme: str = "all") -> Iterator[PianoRendering]:
    """Piano renderings of a split; scheme "no-overlap" drops train renderings of test pieces (Kelz)."""
    if scheme not in ("all", "no-overlap"):
        raise PartitaError(f"unknown split scheme {scheme!r}", "use all or no-overlap")
    for rendering in map(rendering_from_row, rows(dataset_dir, split, "piano-domains")):
        if scheme == "all" or not rendering.overlap:
            yield rendering


def dictionary(dataset_dir: Path) -> np.ndarray:
    """D_T: float32 [n_mels, 88], column k the canonical piano's mean mel profile of MIDI key 21 + k."""
    profiles = sorted(((r.notes.pitch[0], r.mel[:, 0]) for r in renderings(dataset_dir, "dictionary")), key=lambda p: p[0])
    return np.stack([profile for _, profile in profiles], axis=1)
