"""Reading a built chord data set into tensors, and batching it.

Batches are dicts of tensors, the format every chord model family consumes:

    chord_db    float32 [B, 1, n_mels, frames]  the chord's dB mel spectrogram
    note_db     float32 [B, MAX_NOTES, n_mels, frames]  each note's spectrogram alone
                (rows past the chord's notes hold the silence floor and are invalid)
    note_valid  bool    [B, MAX_NOTES]  which rows are notes of the chord
    pitch       int64   [B, MAX_NOTES]  index into DataSpec.pitches (0 where invalid)
    program     int64   [B, MAX_NOTES]  index into DataSpec.programs (0 where invalid)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from components.data.chords.recipe import MAX_NOTES, NOTES_SPLIT
from components.data.manifest import check_file, read_manifest
from components.errors import PartitaError
from components.data.spec import Batch, DataSpec

SILENCE_DB = -100.0  # below any floor: what an absent note "sounds" like


@dataclass
class ChordSplit:
    chord_db: torch.Tensor  # [n, 1, F, T]
    note_rows: torch.Tensor  # [n, MAX_NOTES] rows of the note table, -1 where no note
    pitch: torch.Tensor  # [n, MAX_NOTES] vocabulary indices
    program: torch.Tensor  # [n, MAX_NOTES]
    notes_db: torch.Tensor  # [m + 1, 1, F, T] note table, last row silence

    def __len__(self) -> int:
        return len(self.chord_db)

    def batch(self, index: torch.Tensor) -> Batch:
        rows = self.note_rows[index]
        return {
            "chord_db": self.chord_db[index],
            "note_db": self.notes_db[rows, 0],  # -1 picks the silence row
            "note_valid": rows >= 0,
            "pitch": self.pitch[index],
            "program": self.program[index],
        }

    def batches(self, batch_size: int, limit: int | None = None):
        """The split in order, in batches (evaluation)."""
        n = len(self) if limit is None else min(limit, len(self))
        for start in range(0, n, batch_size):
            yield self.batch(torch.arange(start, min(start + batch_size, n)))


class ChordData:
    """A built chord data set: its manifest, DataSpec and splits as tensors."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        if self.manifest.get("kind") != "chords":
            raise PartitaError(f"{self.path} is a {self.manifest.get('kind')} data set, not a chord data set", "choose a chord data set such as jsb-multi")
        vocab = self.manifest["vocab"]
        n_mels, frames = self.manifest["shapes"]["chord_db"]
        self.spec = DataSpec(
            input_shape=(1, n_mels, frames),
            pitches=tuple(vocab["pitches"]),
            programs=tuple(vocab["programs"]),
            max_notes=self.manifest["max_notes"],
        )
        notes = self._read(NOTES_SPLIT)
        self._note_row = {
            (p[0], g[0]): i for i, (p, g) in enumerate(zip(notes["pitches"].to_pylist(), notes["programs"].to_pylist()))
        }
        self.notes_db = torch.cat([_spectrograms(notes, n_mels, frames), torch.full((1, 1, n_mels, frames), SILENCE_DB)])

    def _read(self, split: str) -> pa.Table:
        entry = self.manifest["splits"].get(split)
        if entry is None:
            raise PartitaError(f"{self.path.name} has no split {split!r}", f"use one of {', '.join(s for s in self.manifest['splits'] if s != NOTES_SPLIT)}")
        if entry["rows"] == 0:
            raise PartitaError(f"split {split!r} of {self.path.name} is empty", "rebuild the data set with a recipe that gives it examples")
        tables = []
        for record in entry["files"]:
            data = (self.path / record["path"]).read_bytes() if (self.path / record["path"]).is_file() else None
            check_file(self.path, record, data)  # catches truncated or edited shards
            tables.append(pq.read_table(pa.BufferReader(data)))
        return pa.concat_tables(tables).sort_by("example_id")

    def split(self, name: str) -> ChordSplit:
        table = self._read(name)
        n_mels, frames = self.spec.input_shape[1:]
        pitches, valid = _padded(table["pitches"])
        programs, _ = _padded(table["programs"])
        note_row = np.full((128, 128), -1, np.int64)
        for (p, g), row in self._note_row.items():
            note_row[p, g] = row
        rows = np.where(valid, note_row[pitches, programs], -1)
        pitch = np.where(valid, np.searchsorted(self.spec.pitches, pitches), 0)
        program = np.where(valid, np.searchsorted(self.spec.programs, programs), 0)
        return ChordSplit(
            chord_db=_spectrograms(table, n_mels, frames),
            note_rows=torch.from_numpy(rows),
            pitch=torch.from_numpy(pitch.astype(np.int64)),
            program=torch.from_numpy(program.astype(np.int64)),
            notes_db=self.notes_db,
        )


def _padded(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """A list<int> column -> ([n, MAX_NOTES] values padded with 0, [n, MAX_NOTES] validity)."""
    lists = column.combine_chunks()
    lengths = lists.value_lengths().to_numpy()
    valid = np.arange(MAX_NOTES)[None, :] < lengths[:, None]
    values = np.zeros((len(lists), MAX_NOTES), np.int64)
    values[valid] = lists.flatten().to_numpy()
    return values, valid


def _spectrograms(table: pa.Table, n_mels: int, frames: int) -> torch.Tensor:
    column = table.column("chord_db").combine_chunks()
    values = column.values.to_numpy(zero_copy_only=False)
    return torch.from_numpy(values.reshape(-1, 1, n_mels, frames).copy())
