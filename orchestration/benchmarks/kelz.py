"""The `kelz` benchmark: Kelz's batched demixing solver against scipy's NNLS frame by frame.

Both solve the same piece (a 30 s rendering by a test piano of a small piano-domains
set built here, 2585 frames, 256 mel bins, the set's 88-note dictionary) with the
regularisers off (lambda_h = lambda_t = 0), where the objective is plain non-negative
least squares, so scipy.optimize.nnls (exact, one frame at a time: the baseline a
per-frame implementation would use) gives the optimum. Figures: frames per second of
each, timed in turns (median of repeats), the speed-up, and both objectives summed over
the piece with the worst per-frame ratio, so the speed is not bought with accuracy.
The solver runs with DemixConfig's defaults (its step count, learning rate and
initialisation) on torch's default threads.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import nnls

from components.data.catalog import DataConfig
from components.data.pianos.reader import dictionary, renderings
from components.models.kelz.demixing import DemixConfig, decompose
from orchestration.benchmarks import Figure, interleave, register
from orchestration.data_build import build
from orchestration.runtime import init_ray

NAME = "kelz"


def piece_and_dictionary(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """A 30 s test rendering and the dictionary of a 2-piece set (fast-loading pianos)."""
    config = DataConfig(
        name="piano-domains",
        root=str(root),
        pianos={
            "pieces": 2,
            "music21_fraction": 0.0,
            "max_seconds": 30.0,
            "valid_fraction": 0.0,
            "test_fraction": 0.5,
            "train_pianos": ["FluidR3_GM:1", "FluidR3_GM:2"],
            "valid_pianos": [],
            "test_pianos": ["TimGM6mb:0"],
        },
    )
    path = build(config, workers=2)
    return next(renderings(path, "test")).mel.astype(np.float64), dictionary(path).astype(np.float64)


def nnls_frames(atoms: np.ndarray, spectrogram: np.ndarray) -> np.ndarray:
    return np.stack([nnls(atoms, frame)[0] for frame in spectrogram.T], axis=1)


def per_frame_objective(atoms: np.ndarray, spectrogram: np.ndarray, activations: np.ndarray) -> np.ndarray:
    return ((atoms @ activations - spectrogram) ** 2).sum(axis=0)


@register(NAME)
def kelz(quick: bool) -> list[Figure]:
    init_ray()
    root = Path(tempfile.mkdtemp(prefix="partita-bench-kelz-"))
    try:
        spectrogram, atoms = piece_and_dictionary(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    config = DemixConfig(lambda_h=0.0, lambda_t=0.0)
    frames = spectrogram.shape[1]
    ours = decompose(atoms, [spectrogram], config)[0].astype(np.float64)  # also warms torch up
    reference = nnls_frames(atoms, spectrogram)
    batched_seconds, nnls_seconds = interleave(
        [lambda: decompose(atoms, [spectrogram], config), lambda: nnls_frames(atoms, spectrogram)], 1 if quick else 3
    )
    objective_ours, objective_nnls = per_frame_objective(atoms, spectrogram, ours), per_frame_objective(atoms, spectrogram, reference)
    sounding = objective_nnls > 1e-12 * objective_nnls.max()
    worst = float((objective_ours[sounding] / objective_nnls[sounding]).max())
    note = (
        f"{frames} frames x {atoms.shape[0]} mel bins x {atoms.shape[1]} notes; {config.steps} Adam steps, lr {config.lr}, "
        f"init {config.init}; torch threads {torch.get_num_threads()}; load average {os.getloadavg()[0]:.1f}"
    )
    return [
        Figure(NAME, "scipy nnls, frame by frame: frames/s", round(frames / nnls_seconds, 1), "frames/s", note=note),
        Figure(NAME, "batched projected Adam: frames/s", round(frames / batched_seconds, 1), "frames/s", note=note),
        Figure(NAME, "speed-up of the batched solver", round(nnls_seconds / batched_seconds, 1), "x", ">= 20", note),
        Figure(NAME, "objective over the piece, scipy nnls (the optimum)", float(objective_nnls.sum()), "", note="sum over frames of ||D a - v||^2"),
        Figure(NAME, "objective over the piece, batched solver", float(objective_ours.sum()), "", note="same piece, same dictionary"),
        Figure(NAME, "worst per-frame objective ratio, batched / nnls", round(worst, 4), "x", "<= 1.01", "frames with a non-zero optimum"),
    ]
