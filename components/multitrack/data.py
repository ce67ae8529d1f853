"""Reading built slakh-like and piano-domain data sets, one row at a time.

Rows stream from Parquet one at a time, so memory holds one piece however large
the set is. Files are checked against the manifest by `partita data info --verify`,
not on every read (a 2-hour set is gigabytes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow.parquet as pq

from components.errors import PartitaError
from components.manifest import read_manifest
from components.multitrack.render import FULL_SCALE
from components.multitrack.rolls import KEYS, NoteTable
from components.multitrack.taxonomy import Hierarchy


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

    def class_notes(self, class_name: str) -> NoteTable:
        parts = [i for i, c in enumerate(self.stem_classes) if c == class_name]
        return self.notes.select(np.isin(self.notes.part, parts))

    def _sum(self, chosen: np.ndarray) -> np.ndarray:
        total = self.stems_pcm[chosen].astype(np.int32).sum(axis=0) if chosen.any() else np.zeros(self.stems_pcm.shape[1], np.int32)
        return total.astype(np.float32) / np.float32(FULL_SCALE)


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


def files(dataset_dir: Path, split: str, kind: str) -> list[Path]:
    """The Parquet files of a split of a `kind` data set, as its manifest lists them."""
    dataset_dir = Path(dataset_dir)
    manifest = read_manifest(dataset_dir)
    if manifest.get("kind") != kind:
        raise PartitaError(f"{dataset_dir} is a {manifest.get('kind')} data set, not {kind}", f"choose a {kind} data set")
    if split not in manifest["splits"]:
        raise PartitaError(f"{dataset_dir} has no split {split!r}", f"choose one of: {', '.join(manifest['splits'])}")
    return [dataset_dir / record["path"] for record in manifest["splits"][split]["files"]]


def rows(dataset_dir: Path, split: str, kind: str) -> Iterator[dict]:
    """Rows of a split, one at a time, in file order."""
    for path in files(dataset_dir, split, kind):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1):
            yield batch.to_pylist()[0]


def row_at(dataset_dir: Path, split: str, kind: str, index: int) -> dict:
    """The `index`-th row of a split in example_id order."""
    paths = files(dataset_dir, split, kind)
    ids = [(i, path, n) for path in paths for n, i in enumerate(pq.read_table(path, columns=["example_id"])["example_id"].to_pylist())]
    if not 0 <= index < len(ids):
        raise PartitaError(f"{Path(dataset_dir).name}/{split} has {len(ids)} rows; index {index} is out of range", f"use 0..{len(ids) - 1}")
    _, path, n = sorted(ids)[index]
    parquet = pq.ParquetFile(path)
    for group in range(parquet.num_row_groups):  # read only the row group that holds the row
        size = parquet.metadata.row_group(group).num_rows
        if n < size:
            return parquet.read_row_group(group).slice(n, 1).to_pylist()[0]
        n -= size
    raise AssertionError("the row was counted in this file")


def piece_from_row(row: dict) -> Piece:
    n_stems = len(row["stem_names"])
    return Piece(
        example_id=row["example_id"],
        name=row["piece"],
        source=row["source"],
        sample_rate=row["sample_rate"],
        stem_names=row["stem_names"],
        programs=row["programs"],
        is_drum=row["is_drum"],
        soundfonts=row["soundfonts"],
        stem_classes=row["stem_classes"],
        stem_leaves=row["stem_leaves"],
        stems_pcm=np.frombuffer(row["stems"], "<i2").reshape(n_stems, -1),
        notes=NoteTable.from_columns(row),
        roll_classes=row["roll_classes"],
        rolls=np.frombuffer(row["rolls"], np.uint8).reshape(len(row["roll_classes"]), 3, KEYS, row["n_frames"]),
        midi=row["midi"],
    )


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


def pieces(dataset_dir: Path, split: str) -> Iterator[Piece]:
    return map(piece_from_row, rows(dataset_dir, split, "multitrack"))


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
