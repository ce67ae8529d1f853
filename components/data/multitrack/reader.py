"""Reading built slakh-like data sets: a piece at a time.

Rows stream from Parquet one at a time, so memory holds one piece however large
the set is. Files are checked against the manifest by `partita data info --verify`,
not on every read (a 2-hour set is gigabytes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa

from components.data.multitrack.render import FULL_SCALE
from components.data.multitrack.rolls import KEYS, NoteTable
from components.data.multitrack.taxonomy import Hierarchy
from components.data.splits import rows


@dataclass
class Piece:
    example_id: int
    name: str
    source: str
    sample_rate: int
    stem_names: list[str]
    programs: list[int]
    is_drum: list[bool]
    soundfonts: list[str]
    stem_classes: list[str]
    stem_leaves: list[str]
    stems_pcm: np.ndarray  # int16 [stems, samples]
    notes: NoteTable  # `part` indexes the stems
    roll_classes: list[str]
    rolls: np.ndarray  # uint8 [roll_classes, 3 (frame, onset, offset), 88, frames]
    midi: bytes

    @property
    def stems(self) -> np.ndarray:
        """float32 [stems, samples]."""
        return self.stems_pcm.astype(np.float32) / np.float32(FULL_SCALE)

    def mix(self) -> np.ndarray:
        """The sum of the stems, exactly: summed as integers, then scaled by a power of two."""
        return self._sum(np.ones(len(self.stem_names), bool))

    def submix(self, node: str, hierarchy: Hierarchy) -> np.ndarray:
        """The sum of the stems under a hierarchy node (silence if none is)."""
        leaves = set(hierarchy.leaves_under(node))
        return self._sum(np.array([leaf in leaves for leaf in self.stem_leaves], bool))

    def class_submix(self, class_name: str) -> np.ndarray:
        """The sum of the stems of an instrument class (silence if none is)."""
        return self._sum(np.array([c == class_name for c in self.stem_classes], bool))

    def class_notes(self, class_name: str) -> NoteTable:
        parts = [i for i, c in enumerate(self.stem_classes) if c == class_name]
        return self.notes.select(np.isin(self.notes.part, parts))

    def _sum(self, chosen: np.ndarray) -> np.ndarray:
        total = self.stems_pcm[chosen].astype(np.int32).sum(axis=0) if chosen.any() else np.zeros(self.stems_pcm.shape[1], np.int32)
        return total.astype(np.float32) / np.float32(FULL_SCALE)


def piece_from_row(row: dict) -> Piece:
    """A Piece from a stored row; a row read with only some columns (e.g. a view's PIECE_COLUMNS) leaves the others empty."""
    n_stems = len(row["stem_names"])
    roll_classes = list(row.get("roll_classes", []))
    rolls = np.frombuffer(row["rolls"], np.uint8).reshape(len(roll_classes), 3, KEYS, row["n_frames"]) if "rolls" in row else np.zeros(0, np.uint8)
    return Piece(
        example_id=int(row["example_id"]),
        name=row.get("piece", ""),
        source=row.get("source", ""),
        sample_rate=int(row["sample_rate"]),
        stem_names=list(row["stem_names"]),
        programs=list(row.get("programs", [])),
        is_drum=list(row.get("is_drum", [])),
        soundfonts=list(row.get("soundfonts", [])),
        stem_classes=list(row["stem_classes"]),
        stem_leaves=list(row.get("stem_leaves", [])),
        stems_pcm=np.frombuffer(row["stems"], "<i2").reshape(n_stems, -1),
        notes=NoteTable.from_columns(row),
        roll_classes=roll_classes,
        rolls=rolls,
        midi=row.get("midi", b""),
    )


def table_pieces(table: pa.Table) -> Iterator[Piece]:
    """The pieces of a table read from a set, the stems taken as Arrow's buffers: no copy of the audio
    (stems are stored uncompressed, so a memory-mapped read copies none either)."""
    stems = table.column("stems")
    for i, row in enumerate(table.drop_columns(["stems"]).to_pylist()):
        yield piece_from_row(row | {"stems": stems[i].as_buffer()})


def pieces(dataset_dir: Path, split: str) -> Iterator[Piece]:
    return map(piece_from_row, rows(dataset_dir, split, "multitrack"))
