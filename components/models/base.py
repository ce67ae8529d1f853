"""The small interface every model family implements.

The generic trainer, the sweeps and the reports only ever talk to a family
through `ModelFamily`: build a module from its config, compute the loss on a
batch, evaluate on batches, optionally draw a figure and apply a trained model to a
recording. A new family is one
module defining a `ModelConfig` subclass and a `ModelFamily` subclass, plus one
line in `components.models.registry`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, ClassVar, Iterable, Literal

import torch
from components.data.spec import Batch, DataSpec, ExampleMaker  # data-side types, re-exported for the families
from components.schema import StrictModel

if TYPE_CHECKING:
    import numpy as np
    import pretty_midi
    from matplotlib.figure import Figure

    from components.data.multitrack.reader import Piece
    from components.data.multitrack.view import ViewConfig

Applied = "np.ndarray | pretty_midi.PrettyMIDI | Figure | dict"


class ModelConfig(StrictModel):
    family: str


@dataclass(frozen=True)
class ViewSpec:
    """What a model trained on a multi-track view needs to know about the data set."""

    sample_rate: int
    classes: tuple[str, ...]  # the instrument classes of the set's taxonomy


@dataclass
class Representation:
    """Frozen features of a batch for the note-property probe.

    Per note (`per_note`): features [B, N, D] aligned with the batch's note rows,
    `matched` [B, N] saying which notes got a feature. Per chord: features [B, D].
    """

    features: torch.Tensor
    per_note: bool
    matched: torch.Tensor | None = None


class ModelFamily(ABC):
    name: ClassVar[str]
    config_class: ClassVar[type[ModelConfig]]
    # the validation metric that picks the best checkpoint, and its direction
    selection_metric: ClassVar[str]
    selection_mode: ClassVar[Literal["min", "max"]]
    # whether `representation` gives features for the note-property probe
    has_representation: ClassVar[bool] = False
    # the one data set the family trains on, read by `open_data` (None: chord sets, or slakh-like with a view)
    dataset: ClassVar[str | None] = None

    def view(self, config: ModelConfig) -> "ViewConfig | None":
        """The multi-track view the family trains on (streamed through Ray Data); None: a chord set, in memory."""
        return None

    def example_maker(self, config: ModelConfig, dataset_dir: Path, cache_dir: Path | None = None) -> ExampleMaker | None:
        """The family's own examples of the view's pieces (read from the built set at `dataset_dir`); None: the view's.
        What a maker derives from the whole set may be kept in `cache_dir` for the next process (None: nowhere)."""
        return None

    def open_data(self, config: ModelConfig, path: Path):
        """An in-memory reader of the built set at `path` (`spec`, `split(name)`), for families whose
        reading depends on their config; None: the set's own reader (components.data.catalog.open_dataset)."""
        return None

    @abstractmethod
    def build(self, config: ModelConfig, data: "DataSpec | ViewSpec") -> torch.nn.Module: ...

    @abstractmethod
    def loss(self, model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        """Scalar training loss and named scalars worth logging."""

    @abstractmethod
    def evaluate(self, model: torch.nn.Module, batches: Iterable[Batch]) -> dict[str, float]:
        """Metrics over all batches (a whole split); `model` is in eval mode, no grad."""

    def evaluate_pieces(
        self, model: torch.nn.Module, pieces: Iterable["Piece"], recognizer: torch.nn.Module | None = None
    ) -> tuple[dict[str, float], list[dict]]:
        """Metrics over whole pieces (full-length SDR, each piece's notes), for the families whose papers score
        them so, and one JSON-able row per piece; `model` is in eval mode, no grad (`partita evaluate`).
        `recognizer`: the model of another run of the family that decides which instruments play (Jointist's
        i- rows); a family that cannot use one refuses it."""
        from components.errors import PartitaError

        raise PartitaError(f"model family {self.name} has no whole-piece evaluation", "its segment metrics are in the run (valid/*, test/*)")

    def figure(self, model: torch.nn.Module, batch: Batch) -> "Figure | None":
        """A picture of what the model does on a few examples, logged as an artifact."""
        return None

    def representation(self, model: torch.nn.Module, batch: Batch) -> Representation | None:
        """Features for the note-property probe (eval mode, no grad); None: nothing to probe."""
        return None

    def applied_spec(self, spec: "DataSpec | ViewSpec", artifact: "Callable[[str], dict | None]"):
        """The `data` that `apply` is given: the checkpoint's spec, or, for a family whose apply step needs what was
        fitted after training (thresholds, say), a spec completed from the run's JSON artifacts: `artifact(path)`
        reads one, None when the run has none at that path."""
        return spec

    def apply(self, model: torch.nn.Module, audio: torch.Tensor, data: "DataSpec | ViewSpec") -> "dict[str, Applied]":
        """What a musician opens, from one recording (`partita apply`); eval mode, no grad.

        `audio` is mono float32 [samples] at `data.sample_rate`, on the model's device.
        Returns file name -> content: a WAV as a float array [samples] at that rate, a MIDI
        as a `pretty_midi.PrettyMIDI`, a figure as a matplotlib Figure, or a JSON-able dict.
        """
        from components.errors import PartitaError

        raise PartitaError(f"model family {self.name} has no apply step yet", "implement apply in the family's module, or apply a run of a family that has one")
