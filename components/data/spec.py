"""What a built data set tells a model, and how a family makes its own examples: data-side types.

They live with the data, not with the models, so that readers and the Ray Data stage can
name them without importing any model family (the families import these readers).
components.models.base re-exports them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch

if TYPE_CHECKING:
    import numpy as np

    from components.data.multitrack.reader import Piece

Batch = dict[str, torch.Tensor]


@dataclass(frozen=True)
class DataSpec:
    """What a model needs to know about the data it is trained on."""

    input_shape: tuple[int, int, int]  # (channels, mel bins, frames)
    pitches: tuple[int, ...]  # MIDI pitch vocabulary, ascending
    programs: tuple[int, ...]  # GM program vocabulary, ascending
    max_notes: int

    @property
    def n_pitches(self) -> int:
        return len(self.pitches)

    @property
    def n_programs(self) -> int:
        return len(self.programs)


@dataclass(frozen=True)
class ExampleMaker:
    """A family's own examples from a piece, in place of its view's (which mix a few chosen stems).

    `make(piece, seed, draw)` -> the piece's examples in segment order, each a dict of numpy arrays
    with `piece` and `start`; `draw` numbers independent draws (stream passes; 0 for the fixed
    validation and test examples). The model featurises them itself: the view's featurizer knows
    only the view's own examples. `recipe` (JSON-able) is everything besides the data set and the
    seed that decides the examples: it keys the cache of fixed examples.
    """

    make: "Callable[[Piece, int, int], list[dict[str, np.ndarray]]]"
    recipe: dict
