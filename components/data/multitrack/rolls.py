"""Note tables and piano rolls.

Frame i of a roll is the instant i / fps (the centre of frame i of a centred
STFT with hop sample_rate / fps). A note from `start` to `end` seconds has its
onset at frame round(start * fps), sounds in frames [onset, max(off, onset + 1))
with off = round(end * fps), and has its offset at frame off (the last frame if
the piece ends first). Rolls keep velocities (1..127, 0 = silent); where notes
of one class overlap on a key, the louder one wins.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pretty_midi

LOWEST, HIGHEST = 21, 108  # the 88 piano keys, A0..C8
KEYS = HIGHEST - LOWEST + 1
FRAME, ONSET, OFFSET = 0, 1, 2  # roll kinds, in this order along axis 1


@dataclass
class NoteTable:
    """Notes of a piece, one entry per note; `part` indexes the piece's parts (stems)."""

    part: np.ndarray  # int16
    pitch: np.ndarray  # int16, MIDI key
    velocity: np.ndarray  # int16
    start: np.ndarray  # float64 seconds
    end: np.ndarray  # float64 seconds

    @classmethod
    def from_midi(cls, midi: pretty_midi.PrettyMIDI) -> "NoteTable":
        rows = [(i, n.pitch, n.velocity, n.start, n.end) for i, inst in enumerate(midi.instruments) for n in inst.notes]
        columns = np.array(rows, dtype=np.float64).reshape(-1, 5).T
        return cls(*(c.astype(np.int16) for c in columns[:3]), columns[3].copy(), columns[4].copy())

    @classmethod
    def from_columns(cls, row: dict) -> "NoteTable":
        """From a stored row's `note_<field>` columns; rows of one-part pieces may omit `note_part`."""
        pitch = np.asarray(row["note_pitch"], np.int16)
        part = np.asarray(row["note_part"], np.int16) if "note_part" in row else np.zeros(len(pitch), np.int16)
        return cls(part, pitch, np.asarray(row["note_velocity"], np.int16), np.asarray(row["note_start"], np.float64), np.asarray(row["note_end"], np.float64))

    def __len__(self) -> int:
        return len(self.pitch)

    def select(self, mask: np.ndarray) -> "NoteTable":
        return NoteTable(self.part[mask], self.pitch[mask], self.velocity[mask], self.start[mask], self.end[mask])

    def for_mir_eval(self) -> tuple[np.ndarray, np.ndarray]:
        """(intervals [n, 2] seconds, pitches [n] Hz), as mir_eval.transcription takes them."""
        return np.stack([self.start, self.end], axis=1), 440.0 * 2.0 ** ((self.pitch - 69) / 12.0)


def piano_rolls(notes: NoteTable, note_class: np.ndarray, n_classes: int, n_frames: int, fps: float) -> np.ndarray:
    """uint8 [n_classes, 3 (frame, onset, offset), 88, n_frames] velocity rolls.

    `note_class`: each note's row in the output (e.g. its part's class among the classes present).
    """
    rolls = np.zeros((n_classes, 3, KEYS, n_frames), np.uint8)
    onset = np.clip(np.round(notes.start * fps).astype(np.int64), 0, n_frames - 1)
    off = np.clip(np.round(notes.end * fps).astype(np.int64), 0, n_frames - 1)
    key = notes.pitch.astype(np.int64) - LOWEST
    velocity = notes.velocity.astype(np.uint8)
    for i in np.argsort(velocity, kind="stable"):  # louder notes written last win
        c, k = note_class[i], key[i]
        rolls[c, FRAME, k, onset[i] : max(off[i], onset[i] + 1)] = velocity[i]
        rolls[c, ONSET, k, onset[i]] = velocity[i]
        rolls[c, OFFSET, k, off[i]] = velocity[i]
    return rolls


def frame_count(seconds: float, fps: float) -> int:
    """Frames at 0, 1/fps, ... up to and including the last instant of the piece."""
    return int(np.floor(seconds * fps)) + 1
