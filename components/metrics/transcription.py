"""Transcription and instrument-recognition metrics.

Notes are arrays of shape [n, 3]: onset (s), offset (s), MIDI pitch; every note
must have offset > onset >= 0 (mir_eval's check). Piano rolls are [frames,
pitches] with pitch index 0 at MIDI `lowest_pitch` (21, A0, for 88 keys).

Note matching is mir_eval's (`mir_eval.transcription.match_notes`, the matching
inside `precision_recall_f1_overlap`, called directly because the aggregations
need counts): onset within 50 ms, pitch within 50 cents, and for "note_offset"
the offset within max(20% of the reference duration, 50 ms). Drum instruments
are always matched on onsets only.

Empty sets follow one convention everywhere (notes, frames, thresholds): with
matched, reference and estimate counts, P = matched/estimate and R =
matched/reference; a 0/0 ratio is 1 when both sides are empty and 0 when only
one is (as mir_eval returns when either side is empty). So an instrument
correctly left silent scores P = R = F = 1, and a silent output for a playing
instrument scores 0 throughout.
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

import mir_eval
import numpy as np

from components.metrics.separation import aggregate, to_numpy

ONSET_TOLERANCE = 0.05
# Criterion name -> mir_eval offset_ratio: "note" (N) ignores offsets, "note_offset" (N&O) does not.
CRITERIA: dict[str, float | None] = {"note": None, "note_offset": 0.2}
DRUMS = frozenset({"Drums"})
LOWEST_PITCH = 21
N_PITCHES = 88


class Scores(NamedTuple):
    precision: float
    recall: float
    f1: float


@dataclass(frozen=True)
class Counts:
    """Sizes of the reference and estimate sets and of their matching, which add across instruments."""

    reference: int
    estimate: int
    matched: int

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.reference + other.reference, self.estimate + other.estimate, self.matched + other.matched)

    def scores(self) -> Scores:
        both_empty = float(self.reference == 0 and self.estimate == 0)
        precision = self.matched / self.estimate if self.estimate else both_empty
        recall = self.matched / self.reference if self.reference else both_empty
        # 2PR/(P+R) simplifies to 2m/(r+e), which also covers P = R = 0.
        total = self.reference + self.estimate
        return Scores(precision, recall, 2 * self.matched / total if total else 1.0)


def as_notes(notes) -> np.ndarray:
    """Notes as a float64 [n, 3] array, validated as mir_eval validates intervals."""
    notes = to_numpy(notes)
    if notes.size == 0:
        return notes.reshape(0, 3)
    if notes.ndim != 2 or notes.shape[1] != 3:
        raise ValueError(f"notes must be [n, 3] (onset, offset, MIDI pitch), not {notes.shape}")
    mir_eval.util.validate_intervals(notes[:, :2])
    return notes


def note_counts(reference, estimate, *, offset_ratio: float | None, onset_tolerance: float = ONSET_TOLERANCE) -> Counts:
    """Note-level matching counts; offset_ratio None ignores offsets (mir_eval's meaning)."""
    reference, estimate = as_notes(reference), as_notes(estimate)
    matched = 0
    if len(reference) and len(estimate):
        matched = len(
            mir_eval.transcription.match_notes(
                reference[:, :2],
                mir_eval.util.midi_to_hz(reference[:, 2]),
                estimate[:, :2],
                mir_eval.util.midi_to_hz(estimate[:, 2]),
                onset_tolerance=onset_tolerance,
                offset_ratio=offset_ratio,
            )
        )
    return Counts(len(reference), len(estimate), matched)


def note_scores(reference, estimate, *, offset_ratio: float | None, onset_tolerance: float = ONSET_TOLERANCE) -> Scores:
    return note_counts(reference, estimate, offset_ratio=offset_ratio, onset_tolerance=onset_tolerance).scores()


@dataclass(frozen=True)
class TranscriptionReport:
    """Note scores under Jointist's three aggregations, per criterion ("note", "note_offset").

    Per piece, the instruments scored are those listed for it in the reference or
    the estimate (a side missing an instrument counts as an empty note list there).
    - flat: per piece, the notes of all non-drum instruments merged into one list
      on each side (so a note may match a note of another instrument; a unison
      of two instruments counts twice), scored, then averaged over pieces.
      Drums are left out, as in the authors' code: their keys are kit pieces,
      not pitches, and would collide with pitched notes.
    - piece: per piece, each instrument scored on its own (a note matches only a
      note of the same instrument), averaged over the piece's instruments, then
      over pieces (the authors' `piecewise_evaluation`).
    - instrument: per piece and instrument, averaged per instrument over the
      pieces it appears in, then across instruments.
    Precision, recall and F1 are each averaged the same way (F1 is not
    recomputed from the averaged P and R). per_instrument holds the per-instrument
    means behind `instrument`.
    """

    flat: dict[str, Scores]
    piece: dict[str, Scores]
    instrument: dict[str, Scores]
    per_instrument: dict[str, dict[str, Scores]]

    def metrics(self) -> dict[str, float]:
        """Flat name -> value mapping for logging, e.g. "piece/note_offset/f1"."""
        return {
            f"{aggregation}/{criterion}/{field}": value
            for aggregation in ("flat", "piece", "instrument")
            for criterion, scores in getattr(self, aggregation).items()
            for field, value in scores._asdict().items()
        }

    def f1s(self, prefix: str, aggregations: tuple[str, ...] = ("flat", "piece", "instrument")) -> dict[str, float]:
        """The F1 values of `metrics` named for logging, e.g. prefix "t_" -> "t_piece_note_offset_f1"."""
        return {
            f"{prefix}{aggregation}_{criterion}_f1": scores.f1
            for aggregation in aggregations
            for criterion, scores in getattr(self, aggregation).items()
        }


def evaluate_notes(
    reference: Mapping[Hashable, Mapping[str, object]],
    estimate: Mapping[Hashable, Mapping[str, object]],
    *,
    drums: Collection[str] = DRUMS,
    onset_tolerance: float = ONSET_TOLERANCE,
) -> TranscriptionReport:
    """Score {piece: {instrument: notes}} estimates against references of the same pieces."""
    if set(reference) != set(estimate):
        raise ValueError(f"reference and estimate cover different pieces: {sorted(map(str, set(reference) ^ set(estimate)))}")
    empty = np.empty((0, 3))
    flat: dict[str, list[Scores]] = {criterion: [] for criterion in CRITERIA}
    records: dict[str, list[tuple[Hashable, str, Scores]]] = {criterion: [] for criterion in CRITERIA}
    for piece, piece_reference in reference.items():
        piece_estimate = estimate[piece]
        instruments = sorted(set(piece_reference) | set(piece_estimate))
        if not instruments:
            raise ValueError(f"piece {piece!r} lists no instrument")
        notes = {
            instrument: (as_notes(piece_reference.get(instrument, empty)), as_notes(piece_estimate.get(instrument, empty)))
            for instrument in instruments
        }
        pitched = [pair for instrument, pair in notes.items() if instrument not in drums]
        merged_reference = np.concatenate([empty] + [ref for ref, _ in pitched])
        merged_estimate = np.concatenate([empty] + [est for _, est in pitched])
        for criterion, offset_ratio in CRITERIA.items():
            flat[criterion].append(
                note_scores(merged_reference, merged_estimate, offset_ratio=offset_ratio, onset_tolerance=onset_tolerance)
            )
            for instrument, (ref, est) in notes.items():
                ratio = None if instrument in drums else offset_ratio
                records[criterion].append((piece, instrument, note_scores(ref, est, offset_ratio=ratio, onset_tolerance=onset_tolerance)))
    if not flat["note"]:
        raise ValueError("no pieces to evaluate")

    piece_scores, instrument_scores = {}, {}
    per_instrument: dict[str, dict[str, Scores]] = {}
    for criterion, criterion_records in records.items():
        by_field = [aggregate((p, i, s[field]) for p, i, s in criterion_records) for field in range(3)]
        piece_scores[criterion] = Scores(*(a.by_piece.mean for a in by_field))
        instrument_scores[criterion] = Scores(*(a.by_instrument.mean for a in by_field))
        for instrument in by_field[0].per_instrument:
            per_instrument.setdefault(instrument, {})[criterion] = Scores(*(a.per_instrument[instrument].mean for a in by_field))
    return TranscriptionReport(
        flat={criterion: Scores(*np.mean(scores, axis=0).tolist()) for criterion, scores in flat.items()},
        piece=piece_scores,
        instrument=instrument_scores,
        per_instrument=per_instrument,
    )


def frame_scores(reference_roll, estimate_roll) -> Scores:
    """Framewise P/R/F1, micro-averaged over every (frame, pitch) cell of two binary rolls of equal shape."""
    reference, estimate = to_numpy(reference_roll, bool), to_numpy(estimate_roll, bool)
    if reference.shape != estimate.shape:
        raise ValueError(f"roll shapes differ: {reference.shape} vs {estimate.shape}")
    return Counts(int(reference.sum()), int(estimate.sum()), int((reference & estimate).sum())).scores()


def notes_to_roll(
    notes,
    *,
    frames_per_second: float,
    n_frames: int | None = None,
    lowest_pitch: int = LOWEST_PITCH,
    n_pitches: int = N_PITCHES,
) -> tuple[np.ndarray, np.ndarray]:
    """Notes -> (onset roll, frame roll), boolean [frames, pitches].

    A note covers frames round(onset * fps) up to, not including, round(offset * fps),
    and at least its onset frame. n_frames defaults to the last note's end; notes
    are cut at n_frames. Pitches outside the roll raise ValueError.
    """
    notes = as_notes(notes)
    start = np.rint(notes[:, 0] * frames_per_second).astype(int)
    end = np.maximum(np.rint(notes[:, 1] * frames_per_second).astype(int), start + 1)
    pitch = np.rint(notes[:, 2]).astype(int) - lowest_pitch
    if ((pitch < 0) | (pitch >= n_pitches)).any():
        raise ValueError(f"pitches outside MIDI {lowest_pitch}..{lowest_pitch + n_pitches - 1}")
    if n_frames is None:
        n_frames = int(end.max(initial=0))
    keep = start < n_frames
    start, end, pitch = start[keep], np.minimum(end[keep], n_frames), pitch[keep]
    onsets = np.zeros((n_frames, n_pitches), bool)
    onsets[start, pitch] = True
    # +1 at each start and -1 at each end; the running sum counts sounding notes.
    changes = np.zeros((n_frames + 1, n_pitches), int)
    np.add.at(changes, (start, pitch), 1)
    np.add.at(changes, (end, pitch), -1)
    return onsets, np.cumsum(changes, axis=0)[:-1] > 0


def roll_to_notes(
    frames,
    onsets=None,
    *,
    frames_per_second: float,
    frame_threshold: float = 0.5,
    onset_threshold: float = 0.5,
    lowest_pitch: int = LOWEST_PITCH,
) -> np.ndarray:
    """Frame (and onset) probabilities [frames, pitches] -> notes sorted by onset, then pitch.

    Onsets gate frames (Onsets and Frames; Kong et al.): a note starts at the
    first frame of each run of onset probability > onset_threshold, and lasts
    while frame probability > frame_threshold (onset frames count as sounding),
    until the next onset of its pitch or the first silent frame. Frame activity
    without an onset makes no note. Without an onset roll, notes are the runs of
    frames above threshold. A note spans frames [s, e) -> (s / fps, e / fps).
    """
    active = to_numpy(frames) > frame_threshold
    if onsets is None:
        onset = active
    else:
        onset = to_numpy(onsets) > onset_threshold
        if onset.shape != active.shape:
            raise ValueError(f"onset and frame rolls differ in shape: {onset.shape} vs {active.shape}")
        active = active | onset
    starts = onset.copy()
    starts[1:] &= ~onset[:-1]
    n_frames = active.shape[0]
    # Pitch-major layout with one always-breaking sentinel frame per pitch, so that
    # the next break after a start is that note's end and never in another pitch.
    breaks = np.ones((active.shape[1], n_frames + 1), bool)
    breaks[:, :n_frames] = (~active | starts).T
    break_positions = np.flatnonzero(breaks)
    pitch, frame = np.nonzero(starts.T)
    start_positions = pitch * (n_frames + 1) + frame
    end = break_positions[np.searchsorted(break_positions, start_positions, side="right")] - pitch * (n_frames + 1)
    notes = np.stack([frame / frames_per_second, end / frames_per_second, (pitch + lowest_pitch).astype(float)], axis=1)
    return notes[np.lexsort((notes[:, 2], notes[:, 0]))]


def tune_thresholds(activations, reference_roll, candidates) -> np.ndarray:
    """Per-pitch thresholds maximising each pitch's framewise F-measure (Kelz and Widmer).

    activations and reference_roll are [frames, pitches] (concatenate pieces along
    frames first); a frame is predicted when its activation exceeds the threshold.
    Returns one candidate per pitch; ties go to the highest candidate (the fewest
    detections), so a pitch never active in the reference gets the highest one.
    """
    activations, reference = to_numpy(activations), to_numpy(reference_roll, bool)
    if activations.shape != reference.shape:
        raise ValueError(f"activation and reference shapes differ: {activations.shape} vs {reference.shape}")
    candidates = np.unique(to_numpy(candidates))
    n_candidates, n_pitches = len(candidates), activations.shape[1]
    # Number of candidates below each activation: the frame is predicted under candidate k iff k < level.
    level = np.searchsorted(candidates, activations, side="left")
    cell = level + np.arange(n_pitches) * (n_candidates + 1)
    size = n_pitches * (n_candidates + 1)
    positives = np.bincount(cell[reference], minlength=size).reshape(n_pitches, n_candidates + 1)
    negatives = np.bincount(cell[~reference], minlength=size).reshape(n_pitches, n_candidates + 1)
    # Predicted under candidate k = frames with level > k: a reversed cumulative sum without its total.
    true_positives = np.cumsum(positives[:, ::-1], axis=1)[:, ::-1][:, 1:]
    false_positives = np.cumsum(negatives[:, ::-1], axis=1)[:, ::-1][:, 1:]
    n_reference = positives.sum(axis=1, keepdims=True)
    total = n_reference + true_positives + false_positives
    with np.errstate(divide="ignore", invalid="ignore"):
        f_measure = np.where(total == 0, 1.0, 2 * true_positives / total)
    best = n_candidates - 1 - np.argmax(f_measure[:, ::-1], axis=1)
    return candidates[best]


def apply_thresholds(activations, thresholds) -> np.ndarray:
    """Binary roll: activations [..., pitches] above their pitch's threshold."""
    return to_numpy(activations) > to_numpy(thresholds)


def average_precision(scores, labels) -> np.ndarray:
    """Per-class average precision (sklearn's step-wise definition, tied scores grouped) from [items, classes].

    AP = sum over distinct score thresholds, descending, of (R_k - R_{k-1}) P_k.
    Classes with no positive label get NaN.
    """
    scores, labels = to_numpy(scores), to_numpy(labels, bool)
    order = np.argsort(-scores, axis=0, kind="stable")
    scores, labels = np.take_along_axis(scores, order, axis=0), np.take_along_axis(labels, order, axis=0)
    true_positives = np.cumsum(labels, axis=0)
    precision = true_positives / np.arange(1, len(scores) + 1)[:, None]
    # A threshold sits at the last item of each group of tied scores.
    boundary = np.ones_like(labels)
    boundary[:-1] = scores[:-1] != scores[1:]
    at_boundary = np.where(boundary, true_positives, 0)
    previous = np.zeros_like(true_positives)
    previous[1:] = np.maximum.accumulate(at_boundary, axis=0)[:-1]
    gained = np.where(boundary, (true_positives - previous) * precision, 0.0).sum(axis=0)
    n_positive = labels.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n_positive > 0, gained / n_positive, np.nan)


def frame_average_precision(scores, labels) -> tuple[float, float]:
    """Framewise AP pooled over every cell of activations and a binary roll of equal shape, and its chance level.

    Threshold-free, so it shows a transcriber learning before its activations cross a decoding
    threshold. Chance is the positive rate: the AP of any score that ignores the audio (a constant
    ties every cell). Both are NaN when the roll has no positive cell.
    """
    scores, labels = to_numpy(scores).ravel(), to_numpy(labels, bool).ravel()
    if scores.shape != labels.shape:
        raise ValueError(f"activation and roll sizes differ: {scores.size} vs {labels.size}")
    if not labels.any():
        return float("nan"), float("nan")
    return float(average_precision(scores[:, None], labels[:, None])[0]), float(labels.mean())


def frame_ap_by_source(estimate, reference, source_keys: list[str]) -> dict[str, float]:
    """`frame_ap` and `frame_ap_chance` pooled over every source, and per source (`frame_ap_<key>`,
    `frame_ap_chance_<key>`), from activations and binary rolls [examples, sources, ...] of equal shape."""
    estimate, reference = to_numpy(estimate), to_numpy(reference, bool)
    if estimate.ndim < 2 or estimate.shape[1] != len(source_keys):
        raise ValueError(f"expected [examples, {len(source_keys)} sources, ...], got {estimate.shape}")
    metrics = dict(zip(("frame_ap", "frame_ap_chance"), frame_average_precision(estimate, reference)))
    for s, key in enumerate(source_keys):
        metrics |= dict(zip((f"frame_ap_{key}", f"frame_ap_chance_{key}"), frame_average_precision(estimate[:, s], reference[:, s])))
    return metrics


def instrument_recognition_scores(scores, labels, *, threshold: float = 0.5) -> dict[str, float]:
    """F1 at `threshold` (score > threshold) and mAP, macro and support-weighted, from [items, classes], and
    the mAPs of the class-frequency baseline (`map_*_chance`: a score constant per class, such as its frequency
    in training, has AP = the class's positive rate here).

    Only classes with at least one positive label are scored: their AP is
    otherwise undefined, and their weight in the weighted averages would be zero.
    """
    scores, labels = to_numpy(scores), to_numpy(labels, bool)
    if scores.shape != labels.shape or scores.ndim != 2:
        raise ValueError(f"scores and labels must both be [items, classes]: {scores.shape} vs {labels.shape}")
    support = labels.sum(axis=0)
    present = support > 0
    if not present.any():
        raise ValueError("no class has a positive label")
    predicted = scores > threshold
    f1 = 2 * (predicted & labels).sum(axis=0)[present] / (predicted.sum(axis=0) + support)[present]
    ap = average_precision(scores, labels)[present]
    weights = support[present]
    return {
        "f1_macro": float(f1.mean()),
        "f1_weighted": float(np.average(f1, weights=weights)),
        "map_macro": float(ap.mean()),
        "map_weighted": float(np.average(ap, weights=weights)),
        "map_macro_chance": float(labels.mean(axis=0)[present].mean()),
        "map_weighted_chance": float(np.average(labels.mean(axis=0)[present], weights=weights)),
    }
