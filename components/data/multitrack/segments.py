"""Segmenting pieces and the seeds' saliency filters, computed on read.

A segmenting is a length, a hop and the filters a target must pass to count in a
segment: its level above `min_dbfs` (Manilow: -30 dBFS), and at least
`min_onsets` onsets louder than velocity `onset_velocity` (Cerberus: 10 onsets,
velocity > 30). Levels are RMS in dB re full scale (a full-scale square wave is
0 dBFS). Only whole segments are cut; a piece shorter than one yields none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from pydantic import Field

from components.schema import StrictModel


class SegmentConfig(StrictModel):
    seconds: float = Field(10.0, gt=0)
    hop_seconds: float = Field(2.5, gt=0)
    min_dbfs: float = Field(-30.0, description="a target quieter than this over the segment is not salient")
    min_onsets: int = Field(0, ge=0, description="a target needs at least this many onsets in the segment")
    onset_velocity: int = Field(30, ge=0, le=127, description="onsets count only above this velocity")


SEGMENTINGS = {
    "hierarchical": SegmentConfig(seconds=10.0, hop_seconds=2.5),  # Manilow ch. 2
    "cerberus": SegmentConfig(seconds=5.0, hop_seconds=5.0, min_onsets=10),  # ch. 3
    "score-informed": SegmentConfig(seconds=5.0, hop_seconds=5.0),  # ch. 4
}


@dataclass
class Segments:
    starts: np.ndarray  # [n] first sample of each segment
    length: int  # samples per segment
    level_dbfs: np.ndarray  # [targets, n]
    onsets: np.ndarray  # [targets, n] onsets above the velocity threshold
    salient: np.ndarray  # [targets, n] bool: passes both filters


def segment(targets: np.ndarray, rate: int, onset_lists: list[tuple[np.ndarray, np.ndarray]], config: SegmentConfig, scale: float = 1.0) -> Segments:
    """Segments of a piece and which targets are salient in each.

    targets: [T, samples] audio (stems, class sums or hierarchy submixes), float or the stored integer PCM;
    `scale` converts it to full-scale units (1 / 32768 for int16 PCM);
    onset_lists: per target, (onset seconds, velocities) of its notes.
    """
    length, hop = round(config.seconds * rate), round(config.hop_seconds * rate)
    samples = targets.shape[1]
    starts = np.arange(0, samples - length + 1, hop, dtype=np.int64) if samples >= length else np.zeros(0, np.int64)
    # Energies of blocks on the grid every segment's bounds lie on, then per segment a difference of their
    # running sum: one pass over the samples a segment covers, reading integers as they are stored (a
    # running sum over every sample in float64 was most of an example's making)
    block = math.gcd(length, hop)
    covered = (int(starts[-1]) + length) // block if len(starts) else 0
    blocks = targets[:, : covered * block].reshape(len(targets), covered, block)
    energy = np.einsum("tbs,tbs->tb", blocks, blocks, dtype=np.float64) * (scale * scale)
    running = np.concatenate([np.zeros((len(targets), 1)), np.cumsum(energy, axis=1)], axis=1)
    mean_square = (running[:, (starts + length) // block] - running[:, starts // block]) / length
    level = 10 * np.log10(np.maximum(mean_square, 1e-20))
    onsets = np.zeros((len(targets), len(starts)), np.int64)
    for t, (times, velocities) in enumerate(onset_lists):
        at = np.round(np.asarray(times)[np.asarray(velocities) > config.onset_velocity] * rate)
        onsets[t] = np.searchsorted(np.sort(at), starts + length) - np.searchsorted(np.sort(at), starts)
    salient = (level > config.min_dbfs) & (onsets >= config.min_onsets)
    return Segments(starts, length, level, onsets, salient)
