"""From f_T's rolls to notes and MIDI.

Onset-gated decoding is components.metrics.transcription.roll_to_notes (a note starts only at
an onset and frames continue it), at the authors' thresholds; this module adds the per-instrument
bookkeeping and the pretty_midi file, one track per instrument with its GM program.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pretty_midi

from components.data.multitrack.taxonomy import DRUMS, ClassTaxonomy
from components.metrics.transcription import roll_to_notes

FRAMES_PER_SECOND = 100
VELOCITY = 80  # f_T predicts no velocity


def decode_notes(onset, frame, *, onset_threshold: float, frame_threshold: float, frames_per_second: float = FRAMES_PER_SECOND) -> np.ndarray:
    """Onset and frame probabilities [88, T] (the model's layout) -> notes [n, 3]: onset s, offset s, MIDI pitch."""
    return roll_to_notes(
        np.asarray(frame).T,
        np.asarray(onset).T,
        frames_per_second=frames_per_second,
        frame_threshold=frame_threshold,
        onset_threshold=onset_threshold,
    )


def gm_program(taxonomy: ClassTaxonomy, name: str) -> int:
    """The lowest GM program of a class (DRUMS for the kit)."""
    index = taxonomy.index(name)
    return min(p for p, c in enumerate(taxonomy.program_class) if c == index)


def to_midi(notes_by_class: Mapping[str, np.ndarray], taxonomy: ClassTaxonomy) -> pretty_midi.PrettyMIDI:
    """One instrument track per class, named after it, with its GM program (drums on the drum channel)."""
    midi = pretty_midi.PrettyMIDI()
    for name, notes in notes_by_class.items():
        program = gm_program(taxonomy, name)
        track = pretty_midi.Instrument(program=0 if program == DRUMS else program, is_drum=program == DRUMS, name=name)
        track.notes = [pretty_midi.Note(VELOCITY, int(pitch), float(start), float(end)) for start, end, pitch in np.asarray(notes).reshape(-1, 3)]
        midi.instruments.append(track)
    return midi
