"""MAPS-like piano domains (Kelz): renderings of piano pieces by several pianos, as mel spectrograms.

`PianoRenderer` is the Ray Data worker: a batch of (piece MIDI, piano) items ->
one row per rendering with the mel spectrogram at Kelz's features (44.1 kHz,
4096-point DFT, hop 512, 256 mel bins: torchaudio's MelSpectrogram, centred
frames, HTK mel scale, no filter normalisation), the frame roll at the same
frame rate and the notes. Dictionary items are single notes on the canonical
piano; their row holds the mean mel profile over the note (one frame).
Audio is not stored: `render_audio` re-renders any row exactly (FluidSynth
renders are deterministic) for listening.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import torch
import torchaudio

from components.data.multitrack.pieces import score_midi
from components.data.multitrack.rolls import FRAME, NoteTable, piano_rolls
from components.data.pianos.recipe import PianoDomainsRecipe, parse_piano
from components.data.synthesis import Note, SynthConfig, Synthesizer

DICTIONARY = "dictionary"


def row_schema() -> pa.Schema:
    ints = pa.list_(pa.int16())
    return pa.schema(
        [
            ("example_id", pa.int64()),
            ("piece_id", pa.int64()),
            ("piece", pa.string()),
            ("piano", pa.string()),  # SOUNDFONT:PROGRAM
            ("overlap", pa.bool_()),  # a train rendering of a test piece: in "All", not in "No Overlap"
            ("seconds", pa.float64()),
            ("n_frames", pa.int32()),
            ("mel", pa.large_binary()),  # float16 [n_mels, n_frames], linear magnitude (mel_power 1)
            ("roll", pa.large_binary()),  # uint8 [88, n_frames] frame roll with velocities
            ("note_pitch", ints),
            ("note_velocity", ints),
            ("note_start", pa.list_(pa.float64())),
            ("note_end", pa.list_(pa.float64())),
            ("midi", pa.binary()),
            ("digest", pa.string()),
        ]
    )


def pianos(recipe: PianoDomainsRecipe) -> list[str]:
    return [recipe.canonical, *recipe.train_pianos, *recipe.valid_pianos, *recipe.test_pianos]


def mel_transform(recipe: PianoDomainsRecipe) -> torchaudio.transforms.MelSpectrogram:
    """The set's features: every rendering went through it, and so must a recording given to a model trained on it."""
    return torchaudio.transforms.MelSpectrogram(
        sample_rate=recipe.sample_rate, n_fft=recipe.n_fft, hop_length=recipe.hop_length, n_mels=recipe.n_mels, power=recipe.mel_power
    )


class PianoRenderer:
    """Batches of {example_id, piece_id, piece, piano, overlap, score columns, split} -> rows of `row_schema`."""

    def __init__(self, recipe: dict):
        self.recipe = r = PianoDomainsRecipe.model_validate(recipe)
        torch.set_num_threads(1)  # one actor per core: let Ray do the parallelism
        fonts = {parse_piano(p)[0] for p in pianos(r)}
        self.synths = {name: Synthesizer(SynthConfig(soundfont=name, sample_rate=r.sample_rate, gain=r.synth_gain)) for name in fonts}
        self.mel = mel_transform(r)
        self.schema = row_schema()

    def render_audio(self, notes: NoteTable, piano: str, seconds: float) -> np.ndarray:
        soundfont, program = parse_piano(piano)
        events = [Note(s, e, int(p), int(v)) for s, e, p, v in zip(notes.start, notes.end, notes.pitch, notes.velocity)]
        return self.synths[soundfont].render(events, program, seconds, mono="mean")

    @torch.inference_mode()
    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        r, rows = self.recipe, []
        for i in range(len(batch["example_id"])):
            item = {name: column[i] for name, column in batch.items()}
            piano, split = str(item["piano"]), str(item["split"])
            midi, midi_data = score_midi(item, str(item["piece"]))
            notes = NoteTable.from_midi(midi)
            seconds = float(notes.end.max()) + r.tail_seconds
            mel = self.mel(torch.from_numpy(self.render_audio(notes, piano, seconds))).numpy()
            if split == DICTIONARY:  # the note's mean profile: D_T's column for its pitch
                sounding = slice(int(round(notes.start.min() * r.frame_rate)), int(round(notes.end.max() * r.frame_rate)))
                mel = mel[:, sounding].mean(axis=1, keepdims=True)
            n_frames = mel.shape[1]
            roll = piano_rolls(notes, np.zeros(len(notes), np.int64), 1, n_frames, r.frame_rate)[0, FRAME]
            row = {
                "example_id": int(item["example_id"]),
                "piece_id": int(item["piece_id"]),
                "piece": str(item["piece"]),
                "piano": piano,
                "overlap": bool(item["overlap"]),
                "seconds": seconds,
                "n_frames": n_frames,
                "mel": mel.astype("<f2").tobytes(),
                "roll": roll.tobytes(),
                "note_pitch": notes.pitch.tolist(),
                "note_velocity": notes.velocity.tolist(),
                "note_start": notes.start.tolist(),
                "note_end": notes.end.tolist(),
                "midi": midi_data,
            }
            digest = hashlib.blake2b(digest_size=16)
            for key in ("piece", "piano", "mel", "roll", "midi"):
                digest.update(row[key] if isinstance(row[key], bytes) else row[key].encode())
            row["digest"] = digest.hexdigest()
            rows.append(row)
        table = pa.Table.from_pylist(rows, schema=self.schema)
        return table.append_column("split", pa.array([str(s) for s in batch["split"]]))
