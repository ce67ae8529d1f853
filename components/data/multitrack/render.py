"""Rendering multi-track pieces: a stem per part, the class rolls and the notes.

`MultitrackRenderer` is a plain callable on column batches of pieces (score
columns with programs assigned, a soundfont per part); Ray Data runs it in an
actor pool, tests call it directly. It imports no torch, so actors start quickly.

Stems are rendered by FluidSynth at `synth_rate` and resampled to `sample_rate`
(FluidSynth interpolates samples without band-limiting, so rendering directly at
16 kHz aliases, up to -16 dB on bright synth leads). One gain per piece scales
the mix to `mix_peak`; stems are then stored as int16, and a stem *is* its
stored int16 signal / 32768. The mix is computed on read as the sum of stems
in int32: exactly their sum, with no rounding.
"""

from __future__ import annotations

import hashlib
import json
from math import gcd

import numpy as np
import pretty_midi
import pyarrow as pa

from components.data.multitrack.pieces import score_midi
from components.data.multitrack.recipe import MultitrackRecipe
from components.data.multitrack.rolls import NoteTable, frame_count, piano_rolls
from components.data.multitrack.taxonomy import DRUMS, load_classes, load_hierarchy
from components.data.synthesis import Note, SynthConfig, Synthesizer

FULL_SCALE = 32768.0
# resampling filter support at the synth rate: rendered beyond the end, then cropped
RESAMPLE_MARGIN = 0.05


def row_schema() -> pa.Schema:
    """One piece per row. Arrays are little-endian bytes; shapes follow from the other columns."""
    ints = pa.list_(pa.int16())
    return pa.schema(
        [
            ("example_id", pa.int64()),
            ("piece", pa.string()),
            ("source", pa.string()),
            ("seconds", pa.float64()),
            ("sample_rate", pa.int32()),
            ("stem_names", pa.list_(pa.string())),
            ("programs", ints),  # GM program; the kit number for drum stems
            ("is_drum", pa.list_(pa.bool_())),
            ("soundfonts", pa.list_(pa.string())),
            ("stem_classes", pa.list_(pa.string())),
            ("stem_leaves", pa.list_(pa.string())),
            ("gain", pa.float32()),
            ("stems", pa.large_binary()),  # int16 [stems, samples]
            ("n_frames", pa.int32()),
            ("roll_classes", pa.list_(pa.string())),
            ("rolls", pa.large_binary()),  # uint8 [roll_classes, 3 (frame, onset, offset), 88, n_frames]
            ("note_part", ints),
            ("note_pitch", ints),
            ("note_velocity", ints),
            ("note_start", pa.list_(pa.float64())),
            ("note_end", pa.list_(pa.float64())),
            ("midi", pa.binary()),
            ("digest", pa.string()),
        ]
    )


def program_key(instrument: pretty_midi.Instrument) -> int:
    """The taxonomy key of a part: its GM program, or DRUMS for any drum kit."""
    return DRUMS if instrument.is_drum else instrument.program


class StemSynth:
    """Parts -> mono float32 stems at `sample_rate`, one FluidSynth render each."""

    def __init__(self, soundfonts: list[str], synth_rate: int, sample_rate: int, gain: float):
        self.synths = {name: Synthesizer(SynthConfig(soundfont=name, sample_rate=synth_rate, gain=gain)) for name in soundfonts}
        self.synth_rate, self.sample_rate = synth_rate, sample_rate
        divisor = gcd(synth_rate, sample_rate)
        self.up, self.down = sample_rate // divisor, synth_rate // divisor

    def render(self, part: pretty_midi.Instrument, soundfont: str, samples: int) -> np.ndarray:
        from scipy.signal import resample_poly  # takes 0.5-2 s to import: only workers need it

        notes = [Note(n.start, n.end, n.pitch, n.velocity) for n in part.notes]
        seconds = samples / self.sample_rate + (RESAMPLE_MARGIN if self.up != self.down else 0.0)
        audio = self.synths[soundfont].render(notes, part.program, seconds, drums=part.is_drum, mono="mean")
        if self.up != self.down:
            audio = resample_poly(audio, self.up, self.down).astype(np.float32)
        return np.pad(audio[:samples], (0, max(0, samples - len(audio))))


class MultitrackRenderer:
    """Batches of {example_id, piece, source, soundfonts, score columns, split} -> Arrow rows of `row_schema`."""

    def __init__(self, recipe: dict):
        self.recipe = MultitrackRecipe.model_validate(recipe)
        r = self.recipe
        self.synth = StemSynth(list(r.soundfonts), r.synth_rate, r.sample_rate, r.synth_gain)
        self.classes = load_classes(r.classes)
        self.hierarchy = load_hierarchy(r.hierarchy)
        self.schema = row_schema()

    def render(self, midi: pretty_midi.PrettyMIDI, soundfonts: list[str]) -> dict:
        """A piece's columns (without example_id, piece, source, midi, digest)."""
        r = self.recipe
        samples = int(np.ceil((midi.get_end_time() + r.tail_seconds) * r.sample_rate))
        stems = np.stack([self.synth.render(part, font, samples) for part, font in zip(midi.instruments, soundfonts)])
        peak = float(np.abs(stems.sum(axis=0)).max())
        gain = r.mix_peak / peak if peak > 0 else 1.0
        stems = np.clip(np.round(stems * (gain * FULL_SCALE)), -FULL_SCALE, FULL_SCALE - 1).astype("<i2")

        seconds = samples / r.sample_rate
        notes = NoteTable.from_midi(midi)
        stem_classes = [self.classes.classes[self.classes.class_of(program_key(p))] for p in midi.instruments]
        roll_classes = sorted(set(stem_classes), key=self.classes.classes.index)
        note_class = np.array([roll_classes.index(stem_classes[p]) for p in notes.part], np.int64)
        n_frames = frame_count(seconds, r.frame_rate)
        rolls = piano_rolls(notes, note_class, len(roll_classes), n_frames, r.frame_rate)
        return {
            "seconds": seconds,
            "sample_rate": r.sample_rate,
            "stem_names": [p.name for p in midi.instruments],
            "programs": [int(p.program) for p in midi.instruments],
            "is_drum": [bool(p.is_drum) for p in midi.instruments],
            "soundfonts": list(soundfonts),
            "stem_classes": stem_classes,
            "stem_leaves": [self.hierarchy.leaf_of(program_key(p)) for p in midi.instruments],
            "gain": float(gain),
            "stems": stems.tobytes(),
            "n_frames": n_frames,
            "roll_classes": roll_classes,
            "rolls": rolls.tobytes(),
            "note_part": notes.part,
            "note_pitch": notes.pitch,
            "note_velocity": notes.velocity,
            "note_start": notes.start,
            "note_end": notes.end,
        }

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        rows = []
        for i in range(len(batch["example_id"])):
            item = {name: column[i] for name, column in batch.items()}
            piece = str(item["piece"])
            midi, midi_data = score_midi(item, piece)
            row = self.render(midi, [str(s) for s in item["soundfonts"]])
            row.update(example_id=int(item["example_id"]), piece=piece, source=str(item["source"]), midi=midi_data)
            row["digest"] = _digest(row)
            rows.append(row)
        table = pa.Table.from_pylist([{k: _plain(v) for k, v in row.items()} for row in rows], schema=self.schema)
        return table.append_column("split", pa.array([str(s) for s in batch["split"]]))


def _plain(value):
    return value.tolist() if isinstance(value, np.ndarray) else value


def _digest(row: dict) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for key in sorted(row):
        value = row[key]
        if isinstance(value, np.ndarray):
            digest.update(value.tobytes())
        elif isinstance(value, bytes):
            digest.update(value)
        else:
            digest.update(json.dumps(value).encode())
    return digest.hexdigest()
