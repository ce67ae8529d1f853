import warnings

import mir_eval
import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, f1_score, precision_recall_fscore_support

from components.metrics.transcription import (
    Scores,
    apply_thresholds,
    evaluate_notes,
    frame_ap_by_source,
    frame_average_precision,
    frame_scores,
    instrument_recognition_scores,
    note_scores,
    notes_to_roll,
    roll_to_notes,
    tune_thresholds,
)


@pytest.fixture
def no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def random_notes(rng, n, pitches=(40, 52)):
    onsets = rng.uniform(0, 10, n)
    return np.stack([onsets, onsets + rng.uniform(0.05, 1.0, n), rng.integers(*pitches, n)], axis=1)


def perturb(rng, notes):
    """An imperfect transcription: jittered onsets and offsets, a few wrong pitches, misses and extras."""
    est = notes[rng.random(len(notes)) > 0.15].copy()
    durations = (est[:, 1] - est[:, 0]) * rng.uniform(0.6, 1.4, len(est))
    est[:, 0] = np.maximum(est[:, 0] + rng.normal(0, 0.04, len(est)), 0)
    est[:, 1] = est[:, 0] + durations
    est[:, 2] += (rng.random(len(est)) < 0.1) * rng.choice([-1, 1], len(est))
    return np.concatenate([est, random_notes(rng, len(notes) // 5)])


def mir_eval_scores(ref, est, offset_ratio):
    p, r, f, _ = mir_eval.transcription.precision_recall_f1_overlap(
        ref[:, :2],
        mir_eval.util.midi_to_hz(ref[:, 2]),
        est[:, :2],
        mir_eval.util.midi_to_hz(est[:, 2]),
        onset_tolerance=0.05,
        offset_ratio=offset_ratio,
    )
    return p, r, f


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("offset_ratio", [None, 0.2])
def test_note_scores_match_mir_eval(seed, offset_ratio):
    rng = np.random.default_rng(seed)
    ref = random_notes(rng, 60)
    est = perturb(rng, ref)
    expected = mir_eval_scores(ref, est, offset_ratio)
    assert 0.1 < expected[2] < 0.95
    np.testing.assert_allclose(note_scores(ref, est, offset_ratio=offset_ratio), expected)


def test_note_scores_hand_made():
    ref = np.array([[1.0, 2.0, 60], [3.0, 4.0, 62], [5.0, 6.0, 64]])
    est = np.array(
        [
            [1.03, 2.0, 60],  # onset within 50 ms, offset exact: matches both ways
            [3.0, 3.5, 62],  # offset 0.5 s early (> 20% of 1 s): onset-only match
            [5.06, 6.0, 64],  # onset 60 ms late: no match
            [7.0, 8.0, 65],  # spurious
        ]
    )
    assert note_scores(ref, est, offset_ratio=None) == pytest.approx((2 / 4, 2 / 3, 2 * 2 / 7))
    assert note_scores(ref, est, offset_ratio=0.2) == pytest.approx((1 / 4, 1 / 3, 2 / 7))


def test_empty_note_lists_follow_the_convention(no_warnings):
    notes = np.array([[0.0, 1.0, 60]])
    assert note_scores([], [], offset_ratio=None) == (1.0, 1.0, 1.0)
    assert note_scores(notes, [], offset_ratio=0.2) == (0.0, 0.0, 0.0)
    assert note_scores(np.empty((0, 3)), notes, offset_ratio=None) == (0.0, 0.0, 0.0)


def test_invalid_notes_are_refused():
    with pytest.raises(ValueError):
        note_scores([[1.0, 1.0, 60]], [[1.0, 2.0, 60]], offset_ratio=None)
    with pytest.raises(ValueError):
        note_scores(np.zeros((2, 2)), [], offset_ratio=None)


def test_evaluate_notes_aggregations():
    piano = np.array([[0.0, 1.0, 60], [1.0, 2.0, 62]])
    bass = np.array([[0.0, 2.0, 40]])
    drums = np.array([[0.0, 0.1, 36], [0.5, 0.6, 38]])
    reference = {
        "p1": {"Piano": piano, "Bass": bass},
        "p2": {"Piano": piano, "Drums": drums},
    }
    estimate = {
        # The bass note is labelled Piano: right for flat, wrong for the other two.
        "p1": {"Piano": np.concatenate([piano, bass])},
        # Drum offsets far off: still matched, drums are onset-only.
        "p2": {"Piano": piano[:1], "Drums": drums + [0, 0.3, 0]},
    }
    report = evaluate_notes(reference, estimate)
    # p1: Piano P=2/3 R=1 F=0.8; Bass all 0. p2: Piano P=1 R=1/2 F=2/3; Drums 1.
    p1_piano, p1_bass = Scores(2 / 3, 1.0, 0.8), Scores(0.0, 0.0, 0.0)
    p2_piano, p2_drums = Scores(1.0, 0.5, 2 / 3), Scores(1.0, 1.0, 1.0)
    for criterion in ("note", "note_offset"):
        # flat ignores drums: p1 is perfect, p2 is p2_piano.
        assert report.flat[criterion] == pytest.approx(np.mean([(1, 1, 1), p2_piano], axis=0))
        assert report.piece[criterion] == pytest.approx(
            np.mean([np.mean([p1_piano, p1_bass], axis=0), np.mean([p2_piano, p2_drums], axis=0)], axis=0)
        )
        piano_mean = np.mean([p1_piano, p2_piano], axis=0)
        assert report.per_instrument["Piano"][criterion] == pytest.approx(piano_mean)
        assert report.instrument[criterion] == pytest.approx(np.mean([piano_mean, p1_bass, p2_drums], axis=0))
    assert report.metrics()["piece/note_offset/f1"] == report.piece["note_offset"].f1
    assert len(report.metrics()) == 18


def test_drums_are_onset_only_but_other_instruments_are_not():
    ref = np.array([[0.0, 1.0, 38]])
    est = np.array([[0.0, 0.2, 38]])
    drums = evaluate_notes({"x": {"Drums": ref}}, {"x": {"Drums": est}})
    pitched = evaluate_notes({"x": {"Piano": ref}}, {"x": {"Piano": est}})
    assert drums.instrument["note_offset"].f1 == 1.0
    assert pitched.instrument["note_offset"].f1 == 0.0
    assert pitched.instrument["note"].f1 == 1.0


def test_evaluate_notes_against_mir_eval_on_random_pieces(no_warnings):
    rng = np.random.default_rng(7)
    reference, estimate = {}, {}
    for piece in range(3):
        reference[piece] = {name: random_notes(rng, 30) for name in ("Piano", "Bass")}
        estimate[piece] = {name: perturb(rng, notes) for name, notes in reference[piece].items()}
    # An instrument only in the estimate (a false instrument) scores 0 and counts.
    estimate[0]["Organ"] = random_notes(rng, 5)
    report = evaluate_notes(reference, estimate)
    for criterion, ratio in (("note", None), ("note_offset", 0.2)):
        per_piece = [
            np.mean([mir_eval_scores(reference[p][i], estimate[p][i], ratio) for i in ("Piano", "Bass")] + [(0, 0, 0)] * (p == 0), axis=0)
            for p in range(3)
        ]
        assert report.piece[criterion] == pytest.approx(np.mean(per_piece, axis=0))
        flat = [
            mir_eval_scores(np.concatenate(list(reference[p].values())), np.concatenate(list(estimate[p].values())), ratio)
            for p in range(3)
        ]
        assert report.flat[criterion] == pytest.approx(np.mean(flat, axis=0))
    assert report.per_instrument["Organ"]["note"] == (0.0, 0.0, 0.0)


def test_evaluate_notes_refuses_mismatched_pieces():
    with pytest.raises(ValueError, match="different pieces"):
        evaluate_notes({"a": {"Piano": []}}, {"b": {"Piano": []}})


def test_frame_scores_match_sklearn():
    rng = np.random.default_rng(8)
    ref = rng.random((200, 88)) < 0.1
    est = torch.tensor((rng.random((200, 88)) < 0.1) | (ref & (rng.random((200, 88)) < 0.6)))
    expected = precision_recall_fscore_support(ref.ravel(), est.numpy().ravel(), average="binary")[:3]
    np.testing.assert_allclose(frame_scores(ref, est), expected)
    assert frame_scores(np.zeros((3, 4)), np.zeros((3, 4))) == (1.0, 1.0, 1.0)


def grid_notes(rng, fps, n_frames, n_pitches=88):
    """Notes on the frame grid; same-pitch notes may touch but onsets are at least 2 frames apart."""
    notes = []
    for pitch in rng.choice(n_pitches, 20, replace=False):
        frame = int(rng.integers(0, 5))
        while frame < n_frames - 1:
            end = min(frame + int(rng.integers(2, 30)), n_frames)
            notes.append([frame / fps, end / fps, 21 + pitch])
            frame = end + int(rng.integers(0, 10))
    notes = np.array(notes)
    return notes[np.lexsort((notes[:, 2], notes[:, 0]))]


def test_roll_round_trip():
    rng = np.random.default_rng(9)
    fps, n_frames = 100, 400
    notes = grid_notes(rng, fps, n_frames)
    onsets, frames = notes_to_roll(notes, frames_per_second=fps, n_frames=n_frames)
    assert frames.shape == (n_frames, 88) and onsets.sum() == len(notes)
    decoded = roll_to_notes(frames.astype(float), onsets.astype(float), frames_per_second=fps)
    np.testing.assert_allclose(decoded, notes)
    assert note_scores(notes, decoded, offset_ratio=0.2) == (1.0, 1.0, 1.0)
    # Without onsets, touching same-pitch notes merge, but the frame roll survives.
    _, again = notes_to_roll(roll_to_notes(frames, frames_per_second=fps), frames_per_second=fps, n_frames=n_frames)
    np.testing.assert_array_equal(again, frames)


def test_onsets_gate_frames():
    frames = np.array([0.9, 0.9, 0.1, 0.9, 0.1, 0.9, 0.9, 0.2, 0.9])[:, None]
    onsets = np.array([0.0, 0.8, 0.7, 0.1, 0.0, 0.0, 0.0, 0.9, 0.0])[:, None]
    # Frame 0 precedes any onset: no note. Onset run 1-2 starts one note; frame 2 sounds
    # through its onset, so the note lasts to frame 3.
    # Frames 5-6 have no onset: no note. Frame 7 is an onset below the frame threshold: a one-frame note.
    notes = roll_to_notes(frames, onsets, frames_per_second=10, lowest_pitch=60)
    np.testing.assert_allclose(notes, [[0.1, 0.4, 60], [0.7, 0.9, 60]])
    # A new onset inside a sustained note splits it.
    split = roll_to_notes(np.ones((6, 1)), np.array([1, 0, 0, 1, 0, 0])[:, None], frames_per_second=10, lowest_pitch=60)
    np.testing.assert_allclose(split, [[0.0, 0.3, 60], [0.3, 0.6, 60]])


def test_notes_to_roll_edges():
    onsets, frames = notes_to_roll([[0.0, 0.001, 21], [0.5, 2.0, 108]], frames_per_second=10, n_frames=10)
    assert frames[0, 0] and frames[:, 0].sum() == 1  # shorter than a frame: kept as one frame
    assert frames[5:, 87].all() and onsets[5, 87]  # cut at n_frames
    with pytest.raises(ValueError, match="pitches outside"):
        notes_to_roll([[0.0, 1.0, 20]], frames_per_second=10)


def test_tuned_thresholds_match_brute_force():
    rng = np.random.default_rng(10)
    reference = rng.random((300, 12)) < 0.2
    activations = np.round(np.clip(reference * 0.35 + rng.random((300, 12)) * 0.7, 0, 1), 2)
    reference[:, 5] = False  # a pitch never played
    candidates = np.linspace(0.05, 0.95, 19)
    thresholds = tune_thresholds(activations, reference, candidates[::-1])
    for pitch in range(12):
        f = [frame_scores(reference[:, pitch], activations[:, pitch] > c).f1 for c in candidates]
        best = max(f)
        assert thresholds[pitch] == max(c for c, v in zip(candidates, f) if v == best)
    assert thresholds[5] == candidates[-1]
    roll = apply_thresholds(activations, thresholds)
    np.testing.assert_array_equal(roll, activations > thresholds[None, :])
    assert frame_scores(reference, roll).f1 >= frame_scores(reference, activations > 0.5).f1


def test_instrument_recognition_matches_sklearn():
    rng = np.random.default_rng(11)
    labels = rng.random((80, 6)) < [0.5, 0.3, 0.1, 0.05, 0.6, 0.0]
    labels[0, 3] = True
    # Scores on a coarse grid, so ties occur.
    scores = np.round(np.clip(labels * 0.3 + rng.random((80, 6)) * 0.7, 0, 1), 1)
    present = np.flatnonzero(labels.sum(axis=0))
    assert len(present) == 5
    result = instrument_recognition_scores(scores, labels)
    predicted = scores > 0.5
    for average in ("macro", "weighted"):
        assert result[f"f1_{average}"] == pytest.approx(f1_score(labels, predicted, labels=present, average=average))
        assert result[f"map_{average}"] == pytest.approx(average_precision_score(labels[:, present], scores[:, present], average=average))
        # the class-frequency baseline: one constant score per class
        constant = np.broadcast_to(labels.mean(axis=0), labels.shape)
        assert result[f"map_{average}_chance"] == pytest.approx(average_precision_score(labels[:, present], constant[:, present], average=average))


def test_frame_average_precision_against_sklearn_and_chance():
    rng = np.random.default_rng(3)
    roll = rng.random((40, 88)) < 0.03
    activations = np.round(np.clip(roll * 0.4 + rng.random((40, 88)) * 0.6, 0, 1), 2)  # informative, with ties
    ap, chance = frame_average_precision(activations, roll)
    assert ap == pytest.approx(average_precision_score(roll.ravel(), activations.ravel()))
    assert chance == pytest.approx(roll.mean())
    assert ap > 2 * chance
    # a score blind to the audio sits exactly at chance; a silent roll has no AP
    assert frame_average_precision(np.full(roll.shape, 0.2), roll) == pytest.approx((roll.mean(), roll.mean()))
    assert all(np.isnan(frame_average_precision(activations, np.zeros_like(roll))))
    with pytest.raises(ValueError, match="sizes differ"):
        frame_average_precision(activations[:, :10], roll)


def test_frame_ap_by_source_pools_and_splits_sources():
    rng = np.random.default_rng(4)
    roll = rng.random((6, 2, 30, 88)) < 0.05  # [examples, sources, frames, pitches]
    activations = np.where(roll, 0.9, 0.1)
    activations[:, 1] = rng.random((6, 30, 88))  # source 1: scores blind to its roll
    metrics = frame_ap_by_source(activations, roll, ["piano", "bass"])
    assert metrics["frame_ap_piano"] == 1.0 and metrics["frame_ap_chance_piano"] == pytest.approx(roll[:, 0].mean())
    assert metrics["frame_ap_bass"] < 0.2
    assert (metrics["frame_ap"], metrics["frame_ap_chance"]) == pytest.approx(frame_average_precision(activations, roll))
    with pytest.raises(ValueError, match="3 sources"):
        frame_ap_by_source(activations, roll, ["piano", "bass", "drums"])


def test_instrument_recognition_perfect_and_invalid():
    labels = np.eye(4, dtype=bool)
    assert instrument_recognition_scores(labels * 0.9, labels) == {
        "f1_macro": 1.0,
        "f1_weighted": 1.0,
        "map_macro": 1.0,
        "map_weighted": 1.0,
        "map_macro_chance": 0.25,
        "map_weighted_chance": 0.25,
    }
    with pytest.raises(ValueError):
        instrument_recognition_scores(np.zeros((3, 2)), np.zeros((3, 2)))
