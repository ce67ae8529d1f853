"""Fixed validation and test examples: the same segments every time, in order, cached once.

The first `view.eval_examples` examples of a split (pieces in example_id order,
segments in time order) are made once per (data set content, view, seed) and
cached under the cache folder; every later run reads them back. The view's
examples are kept as int16 stems, their mixture the exact sum recomputed on read;
a family's own examples (`ModelFamily.example_maker`) are kept as made, and keyed
by the family's recipe instead of the view's cutting.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from components.data.manifest import read_manifest
from components.data.multitrack.examples import PIECE_COLUMNS
from components.data.multitrack.featurize import example_maker
from components.data.multitrack.reader import table_pieces
from components.data.multitrack.render import FULL_SCALE
from components.data.multitrack.view import ViewConfig
from components.data.splits import files
from components.data.spec import ExampleMaker

# bump when the same view would now cut different examples
VERSION = 2  # 2: a draw number in the stems rng (stream passes)


def cache_key(dataset_dir: Path, view: ViewConfig, seed: int, own: ExampleMaker | None = None) -> str:
    """What decides the fixed examples: the set's content, the view's cutting and mixing (or the family's recipe), the seed."""
    if own is None:
        cutting = view.model_dump(mode="json", include={"segment", "sources", "classes", "examples_per_segment", "conditioning", "eval_examples"})
        if view.conditioning:
            cutting["hop_length"] = view.stft.hop_length
    else:
        cutting = {"family": own.recipe, "eval_examples": view.eval_examples}
    fields = {"content": read_manifest(dataset_dir)["content_hash"], "view": cutting, "seed": seed, "version": VERSION}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def make_fixed(dataset_dir: Path, split: str, view: ViewConfig, seed: int, own: ExampleMaker | None = None) -> dict[str, np.ndarray]:
    """The split's first `eval_examples` examples: the view's as int16 `sources`, `piece`, `start` (and `rolls`); a family's own as made."""
    make = example_maker(view, own)
    kept = []
    for path in files(dataset_dir, split, "multitrack"):
        for piece in table_pieces(pq.read_table(path, columns=PIECE_COLUMNS, memory_map=True)):
            for example in make(piece, seed, 0):
                if own is None:
                    example.pop("mixture")
                    example["sources"] = np.round(example["sources"] * FULL_SCALE).astype(np.int16)  # exact: stems are int16 / 32768
                kept.append(example)
    kept.sort(key=lambda e: (int(e["piece"]), int(e["start"])))  # files are not in example_id order
    kept = kept[: view.eval_examples]
    return {key: np.stack([e[key] for e in kept]) for key in kept[0]} if kept else {}


def load_fixed(dataset_dir: Path, split: str, view: ViewConfig, seed: int, cache_dir: Path, own: ExampleMaker | None = None) -> "FixedExamples":
    path = Path(cache_dir) / f"{Path(dataset_dir).name}-{split}-{cache_key(dataset_dir, view, seed, own)}.npz"
    if not path.is_file():
        write_npz(path, make_fixed(dataset_dir, split, view, seed, own))
    with np.load(path) as stored:
        return FixedExamples({key: stored[key] for key in stored.files})


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Arrays to `path`, whole or not at all: written beside it, then renamed (processes that race both write, one rename wins)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
    with open(partial, "wb") as f:
        np.savez(f, **arrays)
    os.replace(partial, path)


class FixedExamples:
    """A split's fixed examples as batches of tensors: the view's `mixture`, `sources` (float32), `piece`, `start`, `rolls`;
    a family's own examples as they were made."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        self.arrays = arrays

    def __len__(self) -> int:
        return len(self.arrays.get("piece", ()))

    def batch(self, index) -> dict[str, torch.Tensor]:
        index = np.asarray(index)
        arrays = {key: value[index] for key, value in self.arrays.items()}
        if "mixture" not in arrays:  # the view's examples: int16 stems, mixed exactly here
            pcm = arrays.pop("sources").astype(np.int32)
            scale = np.float32(1.0 / FULL_SCALE)
            arrays["mixture"] = pcm.sum(axis=1).astype(np.float32) * scale
            arrays["sources"] = pcm.astype(np.float32) * scale
        return {key: torch.from_numpy(value) for key, value in arrays.items()}

    def batches(self, batch_size: int, limit: int | None = None):
        n = len(self) if limit is None else min(limit, len(self))
        for start in range(0, n, batch_size):
            yield self.batch(np.arange(start, min(start + batch_size, n)))
