"""One Jointist training example from a segment of a piece: the whole mixture, which classes play, and
for the instruments the sampler draws, their stems and rolls (empty for an absent instrument).

Plain numpy on a components.data.multitrack.reader.Piece, so it runs in a Ray Data actor as in a test.
Unlike the two-source view (which mixes a few chosen stems), Jointist hears every stem of the piece:
f_IR labels the clip, f_T and f_MSS are asked about single instruments in the full mixture.

    mixture   float32 [samples]            every stem, summed exactly (as integers)
    present   float32 [classes]            1 where a stem of the class has a note in the segment
    instrument int64 [K]                   the drawn classes (K = sampler.present + sampler.absent)
    stems     float32 [K, samples]         the sum of each drawn class's stems (zeros when absent)
    onsets, frames  uint8 [K, 88, frames]  0/1 rolls at `fps` (frame i is the instant i / fps)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from components.data.multitrack.reader import Piece
from components.data.multitrack.render import FULL_SCALE
from components.data.multitrack.rolls import FRAME, ONSET, NoteTable, piano_rolls
from components.data.multitrack.segments import SegmentConfig, segment
from components.data.splits import files
from components.models.jointist.sampler import InstrumentSampler


def segment_example(
    piece: Piece, classes: tuple[str, ...], start: int, length: int, fps: float, sampler: InstrumentSampler, rng: np.random.Generator
) -> dict[str, np.ndarray] | None:
    """The example of samples [start, start + length); None when no class of `classes` plays in it."""
    begin, seconds = start / piece.sample_rate, length / piece.sample_rate
    notes = piece.notes
    inside = (notes.end > begin) & (notes.start < begin + seconds)
    stem_class = np.array([classes.index(c) if c in classes else -1 for c in piece.stem_classes], np.int64)
    playing = np.unique(stem_class[notes.part[inside].astype(np.int64)])
    playing = playing[playing >= 0]
    if not len(playing):
        return None
    present = np.zeros(len(classes), np.float32)
    present[playing] = 1
    instrument, is_present = sampler.draw(playing, rng)

    pcm = piece.stems_pcm[:, start : start + length].astype(np.int32)
    scale = np.float32(1.0 / FULL_SCALE)
    stems = np.stack([pcm[stem_class == c].sum(axis=0) if p else np.zeros(length, np.int32) for c, p in zip(instrument, is_present)])

    picked = notes.select(inside & np.isin(stem_class[notes.part.astype(np.int64)], playing))
    shifted = NoteTable(picked.part, picked.pitch, picked.velocity, np.maximum(picked.start - begin, 0.0), picked.end - begin)
    frames = int(np.floor(seconds * fps)) + 1
    # rolls of the playing classes only (row = rank among them), then copied to the drawn present instruments
    rows = np.searchsorted(playing, stem_class[shifted.part.astype(np.int64)])
    playing_rolls = piano_rolls(shifted, rows, len(playing), frames, fps) > 0
    rolls = np.zeros((len(instrument), *playing_rolls.shape[1:]), bool)
    rolls[is_present] = playing_rolls[np.searchsorted(playing, instrument[is_present])]
    return {
        "mixture": pcm.sum(axis=0).astype(np.float32) * scale,
        "present": present,
        "instrument": instrument.astype(np.int64),
        "stems": stems.astype(np.float32) * scale,
        "onsets": rolls[:, ONSET].astype(np.uint8),
        "frames": rolls[:, FRAME].astype(np.uint8),
    }


def piece_examples(
    piece: Piece, classes: tuple[str, ...], segmenting: SegmentConfig, fps: float, sampler: InstrumentSampler, seed: int, draw: int = 0
) -> list[dict[str, np.ndarray]]:
    """The examples of every segment of a piece in which one of `classes` plays, in order, each tagged with piece and start.

    The instruments of each segment are drawn by a generator seeded by (seed, piece, segment, draw), so the
    examples do not depend on which worker makes them, and each stream pass (`draw`) asks about other instruments.
    """
    found = segment(piece.stems_pcm, piece.sample_rate, [(np.zeros(0), np.zeros(0))] * len(piece.stem_names), segmenting, scale=1.0 / FULL_SCALE)
    examples = []
    for k, start in enumerate(found.starts):
        example = segment_example(piece, classes, int(start), found.length, fps, sampler, np.random.default_rng([seed, piece.example_id, k, draw]))
        if example is not None:
            examples.append({**example, "piece": np.int64(piece.example_id), "start": np.int64(start)})
    return examples


def class_counts(dataset_dir: Path, classes: tuple[str, ...], split: str = "train") -> np.ndarray:
    """Per class, the pieces of a split with a stem of that class: the sampler's counts."""
    counts = np.zeros(len(classes), np.int64)
    for path in files(dataset_dir, split, "multitrack"):
        for stem_classes in pq.read_table(path, columns=["stem_classes"]).column("stem_classes").to_pylist():
            for name in set(stem_classes) & set(classes):
                counts[classes.index(name)] += 1
    return counts
