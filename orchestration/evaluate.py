"""`partita evaluate RUN`: a trained run scored on the whole pieces of a split of its data set.

Training evaluates on fixed segments (seconds long, the same every time); some papers score whole pieces
(Jointist: full-length SDR, each piece's notes). The family's `evaluate_pieces` does that on the pieces of
the run's own data set, read one at a time; the metrics are logged to the run as `piece_<split>/<name>`
(beside its segment metrics, `<split>/<name>`) with one row per piece as `whole_pieces/<split>.json`.
`--recognizer RUN`: another run of the family decides which instruments play (Jointist's i- rows).
"""

from __future__ import annotations

import sys
from typing import Iterator

import torch

from components.errors import PartitaError

PREFIX = "piece_"


def families_with_piece_evaluation() -> list[str]:
    from components.models.base import ModelFamily
    from components.models.registry import all_families

    return sorted(name for name, family in all_families().items() if type(family).evaluate_pieces is not ModelFamily.evaluate_pieces)


def require_piece_evaluation(family) -> None:
    if family.name not in families_with_piece_evaluation():
        raise PartitaError(
            f"model family {family.name} has no whole-piece evaluation (its segment metrics are in the run)",
            f"evaluate a run of one of: {', '.join(families_with_piece_evaluation())}",
        )


def evaluate_run(run_id: str, split: str = "test", limit: int | None = None, uri: str | None = None, recognizer_run: str | None = None) -> dict[str, float]:
    """Score the run (a sweep's parent: its best run) on `split`'s whole pieces; logs and returns the metrics.
    `recognizer_run`: a run of the same family whose model names the instruments (the family checks it)."""
    from components.data.multitrack.reader import pieces
    from orchestration.apply import load_trained
    from orchestration.data_build import dataset_dir
    from orchestration.tracking import RunLogger

    family, model, _, run, config = load_trained(run_id, uri, check=require_piece_evaluation)
    folder = dataset_dir(config.data)
    if not (folder / "manifest.json").is_file():
        raise PartitaError(f"the run's data set is not at {folder}", f"build it again: partita data build {config.data.name}")
    helper = None
    if recognizer_run is not None:
        def same_family(other) -> None:
            if other.name != family.name:
                raise PartitaError(f"--recognizer {recognizer_run} is a {other.name} run, not {family.name}", f"pass a {family.name} run that recognises instruments")

        helper = load_trained(recognizer_run, uri, check=same_family).model
    with torch.no_grad():
        metrics, rows = family.evaluate_pieces(model, _progress(pieces(folder, split), limit), recognizer=helper)
    logger = RunLogger(run.info.run_id, uri)
    logger.metrics({f"{PREFIX}{split}/{name}": value for name, value in metrics.items()}, step=0)
    logger.json({"split": split, "recognizer_run": recognizer_run, "pieces": rows}, f"whole_pieces/{split}.json")
    return metrics


def _progress(found: Iterator, limit: int | None) -> Iterator:
    """The pieces, at most `limit`, with a line on stderr as each starts (a piece takes seconds to minutes)."""
    for index, piece in enumerate(found):
        if limit is not None and index >= limit:
            return
        print(f"piece {index + 1}{f'/{limit}' if limit else ''}: {piece.name} ({piece.stems_pcm.shape[1] / piece.sample_rate:.0f} s)", file=sys.stderr, flush=True)
        yield piece
