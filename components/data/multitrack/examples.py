"""Training examples cut from pieces: segment, keep salient stems, choose and mix them.

Plain numpy, one piece at a time, so each step is testable on one piece and the
same code runs in a Ray Data actor, in a test or on the driver. An example is a
dict of arrays:

    mixture  float32 [samples]           the sum of the chosen stems, exactly
    sources  float32 [sources, samples]  the chosen stems
    rolls    uint8 [sources, 88, frames] (if the view asks) frame rolls at the STFT frame rate
    piece    int64  the piece's example_id;  start  int64  the segment's first sample

Which stems an example mixes is drawn from a generator seeded by (seed, piece,
segment), so the examples of a set are the same whichever worker makes them and
in whatever order: an epoch is a fixed set, and a split's examples are reproducible.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from components.data.multitrack.reader import Piece
from components.data.multitrack.render import FULL_SCALE
from components.data.multitrack.rolls import FRAME, NoteTable, piano_rolls
from components.data.multitrack.segments import Segments, segment
from components.data.multitrack.view import ViewConfig
from components.data.splits import files
from components.errors import PartitaError

# the stored columns a view reads: a piece's stems, classes and notes (not its rolls or MIDI)
PIECE_COLUMNS = ["example_id", "sample_rate", "stems", "stem_names", "stem_classes", "note_part", "note_pitch", "note_velocity", "note_start", "note_end"]


def piece_segments(piece: Piece, view: ViewConfig) -> Segments:
    """The piece's segments and which stems are salient in each (level above min_dbfs, enough onsets).

    A view that names its classes can only choose their stems, so only those are measured (the level of a
    whole stem is most of an example's making: 45 of 70 ms per example, profiled); the others are never salient.
    """
    notes = piece.notes
    measured = [s for s, c in enumerate(piece.stem_classes) if not view.classes or c in view.classes]
    onsets = [(notes.start[notes.part == s], notes.velocity[notes.part == s]) for s in measured]
    found = segment(piece.stems_pcm[measured], piece.sample_rate, onsets, view.segment, scale=1.0 / FULL_SCALE)
    if len(measured) == len(piece.stem_names):
        return found
    shape = (len(piece.stem_names), len(found.starts))
    level, counts, salient = np.full(shape, -200.0), np.zeros(shape, np.int64), np.zeros(shape, bool)
    level[measured], counts[measured], salient[measured] = found.level_dbfs, found.onsets, found.salient
    return Segments(found.starts, found.length, level, counts, salient)


def choices(salient: np.ndarray, stem_classes: list[str], view: ViewConfig, rng: np.random.Generator) -> list[tuple[int, ...]]:
    """Up to `examples_per_segment` distinct stem tuples among the salient stems of one segment."""
    stems = np.flatnonzero(salient)
    if view.classes:  # one stem per named class, in the view's class order
        pools = [[s for s in stems if stem_classes[s] == c] for c in view.classes]
        candidates = list(itertools.product(*pools))
    else:
        candidates = list(itertools.combinations(stems.tolist(), view.sources))
    if not candidates:
        return []
    picked = rng.choice(len(candidates), min(view.examples_per_segment, len(candidates)), replace=False)
    return [tuple(int(s) for s in candidates[i]) for i in sorted(picked)]


def mix(stems_pcm: np.ndarray, chosen: tuple[int, ...], start: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """(mixture, sources) of a segment: sums taken on the stored integers, so the mixture is their exact sum."""
    pcm = stems_pcm[list(chosen), start : start + length].astype(np.int32)
    scale = np.float32(1.0 / FULL_SCALE)
    return pcm.sum(axis=0).astype(np.float32) * scale, pcm.astype(np.float32) * scale


def segment_rolls(notes: NoteTable, chosen: tuple[int, ...], start_seconds: float, frames: int, fps: float) -> np.ndarray:
    """uint8 [sources, 88, frames] velocity frame rolls of the chosen stems over a segment, at `fps`."""
    inside = (notes.end > start_seconds) & (notes.start < start_seconds + frames / fps) & np.isin(notes.part, chosen)
    picked = notes.select(inside)
    shifted = NoteTable(picked.part, picked.pitch, picked.velocity, np.maximum(picked.start - start_seconds, 0.0), picked.end - start_seconds)
    row = np.array([chosen.index(int(p)) for p in shifted.part], np.int64)
    return piano_rolls(shifted, row, len(chosen), frames, fps)[:, FRAME]


def piece_examples(piece: Piece, view: ViewConfig, seed: int, draw: int = 0) -> list[dict[str, np.ndarray]]:
    """Every example of one piece, in segment order; `draw` numbers independent draws of the stems mixed (0 for fixed sets)."""
    found = piece_segments(piece, view)
    rate = piece.sample_rate
    examples = []
    for k, start in enumerate(found.starts):
        rng = np.random.default_rng([seed, piece.example_id, k, draw])
        for chosen in choices(found.salient[:, k], piece.stem_classes, view, rng):
            mixture, sources = mix(piece.stems_pcm, chosen, int(start), found.length)
            example = {"mixture": mixture, "sources": sources, "piece": np.int64(piece.example_id), "start": np.int64(start)}
            if "rolls" in view.conditioning:
                example["rolls"] = segment_rolls(piece.notes, chosen, start / rate, view.frames(rate), rate / view.stft.hop_length)
            examples.append(example)
    return examples


def stack(examples: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {key: np.stack([e[key] for e in examples]) for key in examples[0]} if examples else {}


def check_view(dataset_dir: Path, view: ViewConfig) -> None:
    """Refuse, before any compute, a view the built set cannot serve (reads only small columns)."""
    seconds, classes = [], set()
    for split in ("train", "valid", "test"):
        for path in files(dataset_dir, split, "multitrack"):
            table = pq.read_table(path, columns=["seconds", "stem_classes"])
            seconds += table.column("seconds").to_pylist()
            classes |= {c for row in table.column("stem_classes").to_pylist() for c in row}
    longest = max(seconds, default=0.0)
    if view.segment.seconds > longest:
        raise PartitaError(
            f"the view's {view.segment.seconds:g} s segments are longer than every piece of {Path(dataset_dir).name} (the longest is {longest:.1f} s)",
            f"set model.view.segment.seconds to at most {int(longest)}, or build longer pieces",
        )
    missing = [c for c in view.classes if c not in classes]
    if missing:
        raise PartitaError(
            f"the view asks for class {missing[0]!r}, which no stem of {Path(dataset_dir).name} has",
            f"choose model.view.classes among: {', '.join(sorted(classes))}",
        )
