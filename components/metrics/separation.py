"""Separation metrics (SDR, SI-SDR, SI-SDRi) and the Jointist aggregations.

Definitions (Jointist's and Manilow's, not BSS-eval's), with s the reference and
s_hat the estimate, both summed over the last (time) axis:
  SDR     = 10 log10(||s||^2 / ||s - s_hat||^2)
  SI-SDR  = 10 log10(||a s||^2 / ||s_hat - a s||^2),  a = <s_hat, s> / ||s||^2
  SI-SDRi = SI-SDR(s_hat, s) - SI-SDR(mixture, s)
No mean is removed. Signals may be numpy arrays or torch tensors of any leading
shape (broadcast against each other); they are evaluated in float64 and the result
is a numpy array over the leading dimensions.

Conventions:
- a silent reference (||s|| = 0) gives NaN: the ratio is undefined, and whether
  such a source belongs in the evaluation is the protocol's decision (Jointist
  scores present instruments only; Manilow keeps targets above -30 dBFS);
- every value is clipped to [-max_db, max_db] (100 dB by default), so a perfect
  estimate scores max_db rather than inf, and a silent estimate of a non-silent
  reference scores -max_db in SI-SDR (its SDR is 0 dB by definition).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass

import numpy as np

MAX_DB = 100.0


def to_numpy(x, dtype=np.float64) -> np.ndarray:
    """A numpy copy of an array or (possibly CUDA, grad-tracking) torch tensor."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _ratio_db(signal: np.ndarray, noise: np.ndarray, reference_energy: np.ndarray, max_db: float) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        db = 10.0 * np.log10(signal / noise)
    # signal == 0 covers the silent estimate in SI-SDR, where noise is 0 too (0/0).
    db = np.clip(np.where(signal == 0, -np.inf, db), -max_db, max_db)
    return np.where(reference_energy == 0, np.nan, db)


def sdr(estimate, reference, *, max_db: float = MAX_DB) -> np.ndarray:
    """Plain SDR in dB over the last axis: 10 log10(||s||^2 / ||s - s_hat||^2)."""
    estimate, reference = to_numpy(estimate), to_numpy(reference)
    energy = np.sum(reference**2, axis=-1)
    return _ratio_db(energy, np.sum((reference - estimate) ** 2, axis=-1), energy, max_db)


def si_sdr(estimate, reference, *, max_db: float = MAX_DB) -> np.ndarray:
    """Scale-invariant SDR in dB over the last axis, scaling the reference by <s_hat, s>/||s||^2."""
    estimate, reference = to_numpy(estimate), to_numpy(reference)
    energy = np.sum(reference**2, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = np.sum(estimate * reference, axis=-1) / energy
    target = alpha[..., None] * reference
    return _ratio_db(np.sum(target**2, axis=-1), np.sum((estimate - target) ** 2, axis=-1), energy, max_db)


def si_sdr_improvement(estimate, mixture, reference, *, max_db: float = MAX_DB) -> np.ndarray:
    """SI-SDRi = SI-SDR(estimate, reference) - SI-SDR(mixture, reference); the mixture broadcasts."""
    return si_sdr(estimate, reference, max_db=max_db) - si_sdr(mixture, reference, max_db=max_db)


@dataclass(frozen=True)
class Summary:
    """Mean and distribution (median, quartiles by linear interpolation) of a set of values."""

    mean: float
    median: float
    q1: float
    q3: float
    count: int


def summarise(values: Iterable[float]) -> Summary:
    values = np.asarray(list(values), dtype=np.float64)
    if values.size == 0:
        raise ValueError("cannot summarise an empty set of values")
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    return Summary(float(values.mean()), float(median), float(q1), float(q3), int(values.size))


@dataclass(frozen=True)
class Aggregate:
    """Jointist's three averages of per-source values, each with its distribution.

    by_instrument: mean per instrument class over its sources, then over classes
                   (the distribution is that of the class means);
    by_piece:      mean over the sources of each piece, then over pieces
                   (the distribution is that of the piece means);
    by_source:     over all sources alike;
    per_instrument: each class's own summary over its sources.
    """

    by_instrument: Summary
    by_piece: Summary
    by_source: Summary
    per_instrument: dict[str, Summary]


def aggregate(records: Iterable[tuple[Hashable, str, float]]) -> Aggregate:
    """Aggregate (piece id, instrument, value) records, one per source.

    Used for SDR-like values and, by the transcription metrics, for per-source
    scores. Values must be finite: drop silent references (NaN) first.
    """
    by_piece: dict[Hashable, list[float]] = defaultdict(list)
    by_instrument: dict[str, list[float]] = defaultdict(list)
    values = []
    for piece, instrument, value in records:
        value = float(value)
        if not np.isfinite(value):
            raise ValueError(
                f"non-finite value {value} for piece {piece!r}, instrument {instrument!r}: "
                "drop silent references before aggregating"
            )
        by_piece[piece].append(value)
        by_instrument[instrument].append(value)
        values.append(value)
    if not values:
        raise ValueError("no records to aggregate")
    return Aggregate(
        by_instrument=summarise(np.mean(v) for v in by_instrument.values()),
        by_piece=summarise(np.mean(v) for v in by_piece.values()),
        by_source=summarise(values),
        per_instrument={instrument: summarise(v) for instrument, v in sorted(by_instrument.items())},
    )
