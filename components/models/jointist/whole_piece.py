"""Jointist on whole pieces, the paper's protocol for its tables: full-length SDR per instrument (Table 3) and
note F1 over each piece's notes (Table 2), where the fixed segments give 2 s clips.

Each piece is analysed end to end as `partita apply` does (components.models.jointist.pipeline: clip by clip,
joined in time). Transcription and separation are teacher-forced, as the paper's rows without the i- prefix:
f_T and f_MSS are asked about the classes that play in the piece (a stem of the class with a note); the
ground-truth-roll separator (the upper bound) is given each class's roll from the piece's notes. f_IR's
decision is its clip scores pooled by their maximum, scored per piece against the classes that play.

Given the f_IR of another run (`recognizer`), f_T is also asked about the instruments that f_IR hears instead:
the paper's i- rows, flat note F1 only (jointist.md: an instrument heard but not playing, or playing but not
heard, has no instrument-wise F1). Separation has no i- rows in the paper and gets none here.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from components.data.multitrack.reader import Piece
from components.data.multitrack.rolls import FRAME, frame_count, piano_rolls
from components.errors import PartitaError
from components.metrics.separation import aggregate, sdr
from components.metrics.transcription import evaluate_notes, instrument_recognition_scores
from components.models.jointist.pipeline import analyse


def evaluate_whole_pieces(model, pieces: Iterable[Piece], recognizer=None) -> tuple[dict[str, float], list[dict]]:
    """(metrics named as the segment evaluation's, one row per piece) of a JointistModel in eval mode; with another
    run's f_IR as `recognizer`, the i- rows too (`i_t_flat_*`)."""
    config = model.config
    if recognizer is not None:
        _check_recognizer(model, recognizer)
    scored = config.schedule == "separation_true_rolls"  # the upper bound: f_MSS hears the score's rolls
    names = config.instruments.names
    performs = model.transcriber is not None or model.separator is not None
    scores, labels, rows, separated = [], [], [], []
    reference_notes, estimated_notes, heard_notes = {}, {}, {}
    for piece in pieces:
        playing = [name for name in names if len(piece.class_notes(name))]
        if not playing:
            continue
        mixture = piece.mix()
        row = {"piece": piece.name, "seconds": round(len(mixture) / piece.sample_rate, 2), "instruments": playing}
        if model.recognizer is not None:
            pooled = analyse(model, None, mixture).scores
            scores.append([pooled[name] for name in names])
            labels.append([name in playing for name in names])
            row["recognised"] = [name for name in names if pooled[name] > 0.5]
        if performs:
            score_rolls = {name: _frames(piece, name, len(mixture), config.audio.fps) for name in playing} if scored else None
            result = analyse(None, model, mixture, instruments=playing, true_frames=score_rolls)
            if model.transcriber is not None:
                reference_notes[piece.name] = {name: _notes(piece, name) for name in playing}
                estimated_notes[piece.name] = result.notes
                row["notes"] = {name: [len(result.notes[name]), len(reference_notes[piece.name][name])] for name in playing}
            if recognizer is not None:
                heard = analyse(recognizer, None, mixture).instruments
                unasked = [name for name in heard if name not in result.notes]  # f_T's notes of an instrument do not depend on the others asked
                found = result.notes | (analyse(None, model, mixture, instruments=unasked, separate=False).notes if unasked else {})
                heard_notes[piece.name] = {name: found[name] for name in heard}
                row["recognised"] = heard
            for name, stem in result.stems.items():
                truth = piece.class_submix(name)
                value, baseline = float(sdr(stem, truth)), float(sdr(mixture, truth))
                if np.isfinite(value):  # NaN: a class whose stems are silent
                    separated.append((piece.name, name, value, value - baseline))
                    row.setdefault("sdr", {})[name] = round(value, 3)
        rows.append(row)
    if not rows:
        raise PartitaError("no piece has a note of the model's instrument classes", "evaluate on a split whose pieces play them (--split)")
    metrics = {"pieces": float(len(rows))}
    if scores:
        metrics |= {f"ir_{name}": value for name, value in instrument_recognition_scores(np.array(scores), np.array(labels)).items()}
    if reference_notes:
        report = evaluate_notes(reference_notes, estimated_notes)
        metrics |= report.f1s("t_")
    if heard_notes:
        metrics |= evaluate_notes(reference_notes, heard_notes).f1s("i_t_", aggregations=("flat",))
    if separated:
        by = aggregate((piece, name, value) for piece, name, value, _ in separated)
        metrics |= {"sdr": by.by_source.mean, "sdr_instrument": by.by_instrument.mean, "sdr_piece": by.by_piece.mean}
        metrics["sdr_gain"] = float(np.mean([gain for *_, gain in separated]))
    return metrics, rows


def _check_recognizer(model, recognizer) -> None:
    """The i- rows need this run's f_T and the other run's f_IR over the same classes, at the same rate."""
    if recognizer.recognizer is None:
        raise PartitaError(f"the recognizer run has no f_IR (its schedule is {recognizer.config.schedule})", "pass a run trained with model.schedule=recognition")
    if model.transcriber is None:
        raise PartitaError(
            f"the i- rows score f_T's notes, and this run has no f_T (its schedule is {model.config.schedule})",
            "evaluate a transcription or joint run with the recognizer, or drop it",
        )
    mine, theirs = model.config, recognizer.config
    if mine.instruments.names != theirs.instruments.names or mine.audio.sample_rate != theirs.audio.sample_rate:
        raise PartitaError(
            "the recognizer run has other instrument classes or another sample rate than this run",
            "pass an f_IR run trained with this run's model.instruments and model.audio.sample_rate",
        )


def _frames(piece: Piece, name: str, samples: int, fps: float) -> np.ndarray:
    """A class's 0/1 frame roll [88, frames] over the whole piece. Cut into clips, it is what training clips' rolls
    hold, but for a clip's last frame: a clip's roll ends a note that runs past the clip one frame early."""
    notes = piece.class_notes(name)
    rolls = piano_rolls(notes, np.zeros(len(notes), np.int64), 1, frame_count(samples / piece.sample_rate, fps), fps)
    return (rolls[0, FRAME] > 0).astype(np.float32)


def _notes(piece: Piece, name: str) -> np.ndarray:
    """A class's notes over the whole piece, [n, 3]: onset s, offset s, MIDI pitch."""
    notes = piece.class_notes(name)
    return np.stack([notes.start, notes.end, notes.pitch], axis=1).astype(np.float64).reshape(-1, 3)
