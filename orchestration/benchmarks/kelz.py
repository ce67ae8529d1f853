"""The `kelz` benchmark: Kelz's batched demixing solver against scipy's NNLS frame by frame.

Both solve the same piece (a 30 s rendering by a test piano of a 2-piece piano-domains
plan, rendered here, about 2600 frames, 256 mel bins, the set's 88-note dictionary) with the
regularisers off (lambda_h = lambda_t = 0), where the objective is plain non-negative
least squares, so scipy.optimize.nnls (exact, one frame at a time: the baseline a
per-frame implementation would use) gives the optimum. Figures: frames per second of
each, timed in turns (median of repeats), the speed-up, and both objectives summed over
the piece with the worst frame's excess, so the speed is not bought with accuracy.
The solver runs with DemixConfig's defaults (its step count, learning rate and
initialisation), timed twice: on one thread (per core, as scipy runs and as the experiment's
demixing trials run, one per core) and on torch's default threads (as `partita apply` runs it).
The target is on the latter (the issue's comparison: what a user runs against the loop they
would write); the per-core ratio is printed beside it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from scipy.optimize import nnls

from components.data.pianos.plan import plan_piano_domains
from components.data.pianos.reader import rendering_from_row
from components.data.pianos.recipe import PianoDomainsRecipe
from components.data.pianos.render import DICTIONARY, PianoRenderer
from components.models.kelz.demixing import DemixConfig, decompose
from orchestration.benchmarks import Figure, interleave, register

NAME = "kelz"


def piece_and_dictionary(sources: Path) -> tuple[np.ndarray, np.ndarray]:
    """A 30 s rendering by a test piano and the 88-note dictionary, rendered in this process with the
    piano-domains components (the plan of a 2-piece set, its renderer), so no Ray start-up is timed or needed."""
    recipe = PianoDomainsRecipe(
        pieces=2, music21_fraction=0.0, max_seconds=30.0, valid_fraction=0.0, test_fraction=0.5,
        train_pianos=("FluidR3_GM:1", "FluidR3_GM:2"), valid_pianos=(), test_pianos=("TimGM6mb:0",),
    )
    items = pa.concat_tables(plan_piano_domains("bench", recipe, sources).items)
    renderer = PianoRenderer(recipe.model_dump(mode="json"))
    rendered = renderer(items.filter(pc.is_in(items["split"], pa.array(["test", DICTIONARY]))).to_pydict())
    rows = [rendering_from_row(row) for row in rendered.to_pylist()]
    piece = next(r for r, split in zip(rows, rendered["split"].to_pylist()) if split == "test")
    notes = sorted((r for r, split in zip(rows, rendered["split"].to_pylist()) if split == DICTIONARY), key=lambda r: r.notes.pitch[0])
    return piece.mel.astype(np.float64), np.stack([r.mel[:, 0] for r in notes], axis=1).astype(np.float64)


def nnls_frames(atoms: np.ndarray, spectrogram: np.ndarray) -> np.ndarray:
    return np.stack([nnls(atoms, frame)[0] for frame in spectrogram.T], axis=1)


def per_frame_objective(atoms: np.ndarray, spectrogram: np.ndarray, activations: np.ndarray) -> np.ndarray:
    return ((atoms @ activations - spectrogram) ** 2).sum(axis=0)


@register(NAME)
def kelz(quick: bool) -> list[Figure]:
    default_threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="partita-bench-kelz-") as sources:
        spectrogram, atoms = piece_and_dictionary(Path(sources))  # (the renderer sets torch to one thread)
    config = DemixConfig(lambda_h=0.0, lambda_t=0.0)
    frames = spectrogram.shape[1]
    ours = decompose(atoms, [spectrogram], config)[0].astype(np.float64)  # also warms torch up
    reference = nnls_frames(atoms, spectrogram)

    def batched(threads: int):
        def run():
            torch.set_num_threads(threads)
            decompose(atoms, [spectrogram], config)
        return run

    one_thread_seconds, all_threads_seconds, nnls_seconds = interleave(
        [batched(1), batched(default_threads), lambda: nnls_frames(atoms, spectrogram)], 1 if quick else 5
    )
    torch.set_num_threads(default_threads)
    objective_ours, objective_nnls = per_frame_objective(atoms, spectrogram, ours), per_frame_objective(atoms, spectrogram, reference)
    # per frame, what the solver leaves above the optimum as a share of the frame's energy ||v||^2
    # (a ratio to the optimum itself explodes on near-silent frames whose optimum is ~0)
    excess = float(((objective_ours - objective_nnls) / np.maximum((spectrogram**2).sum(axis=0), 1e-12)).max())
    note = (
        f"{frames} frames x {atoms.shape[0]} mel bins x {atoms.shape[1]} notes; {config.steps} Adam steps, lr {config.lr}, "
        f"init {config.init}; load average {os.getloadavg()[0]:.1f}"
    )
    return [
        Figure(NAME, "scipy nnls, frame by frame: frames/s", round(frames / nnls_seconds, 1), "frames/s", note=note),
        Figure(NAME, "batched projected Adam, 1 thread: frames/s", round(frames / one_thread_seconds, 1), "frames/s", note=note),
        Figure(NAME, f"batched projected Adam, {default_threads} threads: frames/s", round(frames / all_threads_seconds, 1), "frames/s", note=note),
        Figure(NAME, "speed-up of the batched solver, per core (1 thread each)", round(nnls_seconds / one_thread_seconds, 1), "x", note=note),
        Figure(NAME, f"speed-up of the batched solver on {default_threads} threads", round(nnls_seconds / all_threads_seconds, 1), "x", ">= 20", note),
        Figure(NAME, "objective over the piece, scipy nnls (the optimum)", float(objective_nnls.sum()), "", note="sum over frames of ||D a - v||^2"),
        Figure(NAME, "objective over the piece, batched solver", float(objective_ours.sum()), "", note="same piece, same dictionary"),
        Figure(NAME, "objective ratio over the piece, batched / nnls", round(float(objective_ours.sum() / objective_nnls.sum()), 5), "x", "<= 1.01"),
        Figure(NAME, "worst frame: objective above the optimum, share of the frame's energy", round(excess, 5), "", "<= 0.01"),
    ]
