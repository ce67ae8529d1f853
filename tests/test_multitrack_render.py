"""Stems, mixes, submixes and rolls of a hand-made piece, and segment saliency (no Ray)."""

from __future__ import annotations

import numpy as np
import pretty_midi
import pytest

from components.data.multitrack.pieces import parse_midi, score_columns, tidy
from components.data.multitrack.reader import piece_from_row
from components.data.multitrack.recipe import MultitrackRecipe
from components.data.multitrack.render import MultitrackRenderer
from components.data.multitrack.rolls import FRAME, OFFSET, ONSET, frame_count
from components.data.multitrack.segments import SEGMENTINGS, SegmentConfig, segment
from components.data.multitrack.taxonomy import load_hierarchy

FPS = 100.0


def _part(name: str, program: int, notes: list[tuple[int, int, float, float]], is_drum: bool = False) -> pretty_midi.Instrument:
    part = pretty_midi.Instrument(program=program, is_drum=is_drum, name=name)
    part.notes = [pretty_midi.Note(velocity=v, pitch=p, start=s, end=e) for v, p, s, e in notes]
    return part


@pytest.fixture(scope="module")
def rendered():
    """A 4-part piece (piano chord, bass, strings silent after 2 s, drums) rendered like a build renders it."""
    midi = pretty_midi.PrettyMIDI(resolution=960, initial_tempo=120.0)
    midi.instruments = [
        _part("piano", 0, [(100, p, 0.5, 1.5) for p in (60, 64, 67)] + [(40, 72, 2.0, 2.63), (90, 21, 3.0, 3.5)]),
        _part("bass", 33, [(110, 36, 0.0, 1.0), (105, 43, 1.0, 2.0), (100, 36, 2.0, 4.0)]),
        _part("strings", 48, [(80, 55, 0.0, 1.995), (80, 108, 0.2, 1.0)]),
        _part("drums", 0, [(120, 36, t, t + 0.1) for t in (0.0, 1.0, 2.0, 3.0)] + [(90, 38, 0.5, 0.6), (25, 42, 1.507, 1.6)], is_drum=True),
    ]
    recipe = MultitrackRecipe(soundfonts=("FluidR3_GM",), frame_rate=FPS, tail_seconds=0.5)
    renderer = MultitrackRenderer(recipe.model_dump(mode="json"))
    item = {"example_id": 7, "piece": "hand-made", "source": "midi", "soundfonts": ["FluidR3_GM"] * 4, **score_columns(midi), "split": "test"}
    table = renderer({name: np.array([value], dtype=object) for name, value in item.items()})
    row = table.to_pylist()[0]
    return parse_midi(row["midi"], "hand-made"), piece_from_row(row), table


def test_row_describes_the_parts(rendered):
    midi, piece, table = rendered
    assert table.column("split").to_pylist() == ["test"] and piece.example_id == 7
    assert [(p.name, p.program, p.is_drum) for p in midi.instruments] == [("piano", 0, False), ("bass", 33, False), ("strings", 48, False), ("drums", 0, True)]
    assert piece.stem_classes == ["Piano", "Bass", "Strings", "Drums"]
    assert piece.stem_leaves == ["acoustic pianos", "electric and synth basses", "ensembles and voices", "drums"]
    assert piece.roll_classes == ["Piano", "Bass", "Strings", "Drums"]
    assert piece.stems_pcm.shape == (4, int(np.ceil((4.0 + 0.5) * 16000)))
    assert len(piece.notes) == sum(len(p.notes) for p in midi.instruments)


def test_stems_sum_to_the_mix(rendered):
    _, piece, _ = rendered
    stems = piece.stems
    assert np.abs(stems).max(axis=1).min() > 0.01  # every stem sounds
    np.testing.assert_allclose(piece.mix(), stems.sum(axis=0), rtol=0, atol=1e-6)
    assert np.abs(piece.mix()).max() == pytest.approx(0.9, abs=1e-3)  # one gain, mix at mix_peak


def test_hierarchy_submixes_are_sums_of_their_leaves(rendered):
    _, piece, _ = rendered
    hierarchy = load_hierarchy()
    for node in (*hierarchy.families, *hierarchy.groups):
        leaves = sum(piece.submix(leaf, hierarchy) for leaf in hierarchy.leaves_under(node))
        np.testing.assert_allclose(piece.submix(node, hierarchy), leaves, rtol=0, atol=1e-6)
    group_total = sum(piece.submix(group, hierarchy) for group in hierarchy.groups)
    np.testing.assert_allclose(group_total, piece.mix(), rtol=0, atol=1e-6)
    # piano (keyboards) and strings (orchestral strings) make up "strings and keys"
    np.testing.assert_allclose(piece.submix("strings and keys", hierarchy), piece.stems[0] + piece.stems[2], atol=1e-6)
    assert not piece.submix("brass and woodwinds", hierarchy).any()


def test_every_note_is_in_the_rolls_at_its_frames(rendered):
    midi, piece, _ = rendered
    n_frames = frame_count(piece.stems_pcm.shape[1] / 16000, FPS)
    assert piece.rolls.shape == (4, 3, 88, n_frames)
    for part, instrument in enumerate(midi.instruments):
        roll = piece.rolls[piece.roll_classes.index(piece.stem_classes[part])]
        for note in instrument.notes:
            key, onset, off = note.pitch - 21, round(note.start * FPS), round(note.end * FPS)
            assert roll[ONSET, key, onset] == note.velocity
            assert (roll[FRAME, key, onset : max(off, onset + 1)] == note.velocity).all()
            assert roll[OFFSET, key, min(off, n_frames - 1)] == note.velocity
        # and nothing else: one onset and offset per note, frames exactly the notes' spans (no overlaps here)
        spans = [max(round(n.end * FPS), round(n.start * FPS) + 1) - round(n.start * FPS) for n in instrument.notes]
        assert int((roll[FRAME] > 0).sum()) == sum(spans)
        assert int((roll[ONSET] > 0).sum()) == int((roll[OFFSET] > 0).sum()) == len(instrument.notes)
    # the note lists for mir_eval are the MIDI's notes
    intervals, hertz = piece.class_notes("Bass").for_mir_eval()
    assert intervals[:, 0].tolist() == [n.start for n in midi.instruments[1].notes]
    np.testing.assert_allclose(hertz[0], 65.406, atol=1e-3)


def test_saliency_filters_drop_silent_and_sparse_targets():
    rate = 1000
    t = np.arange(20 * rate) / rate
    loud = 0.5 * np.sin(2 * np.pi * 50 * t)
    half = np.where(t < 10, loud, 0.0)
    faint = 0.01 * np.sin(2 * np.pi * 50 * t)  # -43 dBFS
    onsets = (np.array([1.0, 2.0, 3.0, 12.0]), np.array([100, 100, 100, 20]))
    everywhere = (np.arange(0, 20, 0.25), np.full(80, 90))
    config = SegmentConfig(seconds=5, hop_seconds=2.5, min_dbfs=-30, min_onsets=0)
    segments = segment(np.stack([loud, half, faint]), rate, [everywhere, everywhere, everywhere], config)
    assert segments.starts.tolist() == [0, 2500, 5000, 7500, 10000, 12500, 15000]
    assert segments.salient[0].all()
    assert segments.salient[1].tolist() == [True, True, True, True, False, False, False]
    assert not segments.salient[2].any()
    np.testing.assert_allclose(segments.level_dbfs[0], 10 * np.log10(0.125), atol=0.01)
    # the onset filter: 3 onsets louder than velocity 30 only in the first segment; velocity 20 never counts
    counted = segment(np.stack([loud]), rate, [onsets], config.model_copy(update={"min_onsets": 3}))
    assert counted.onsets[0].tolist() == [3, 1, 0, 0, 0, 0, 0]
    assert counted.salient[0].tolist() == [True, False, False, False, False, False, False]
    # stored int16 PCM with its scale measures the same levels as the float audio it stands for
    pcm = np.round(np.stack([loud, half, faint]) * 32768).astype(np.int16)
    from_pcm = segment(pcm, rate, [everywhere] * 3, config, scale=1 / 32768)
    np.testing.assert_allclose(from_pcm.level_dbfs, segment(pcm / 32768, rate, [everywhere] * 3, config).level_dbfs, atol=1e-9)
    np.testing.assert_allclose(from_pcm.level_dbfs[:2], segments.level_dbfs[:2], atol=0.001)


def test_saliency_on_rendered_stems(rendered):
    _, piece, _ = rendered
    config = SEGMENTINGS["score-informed"].model_copy(update={"seconds": 1.0, "hop_seconds": 1.0})
    lists = [(piece.notes.start[piece.notes.part == s], piece.notes.velocity[piece.notes.part == s]) for s in range(4)]
    segments = segment(piece.stems, piece.sample_rate, lists, config)
    # strings stop at 2 s (their release tail fades within the next second): silent from 3 s on
    assert segments.salient[2, :2].all() and not segments.salient[2, 3:].any()
    assert segments.salient[1, :4].all()  # the bass plays to 4 s


def test_tidy_cuts_repeated_keys_and_moves_pitches_into_range():
    midi = pretty_midi.PrettyMIDI()
    midi.instruments = [
        _part("a", 0, [(80, 60, 0.0, 2.0), (90, 60, 1.0, 3.0), (70, 10, 0.0, 1.0), (70, 120, 0.0, 1.0)]),
        _part("k", 0, [(80, 20, 0.0, 0.1), (80, 36, 0.0, 0.1)], is_drum=True),
    ]
    tidied = tidy(midi, max_seconds=2.5)
    notes = sorted((n.pitch, n.start, n.end, n.velocity) for n in tidied.instruments[0].notes)
    assert notes == [(22, 0.0, 1.0, 70), (60, 0.0, 1.0, 80), (60, 1.0, 2.5, 90), (108, 0.0, 1.0, 70)]
    assert [n.pitch for n in tidied.instruments[1].notes] == [36]  # a drum key outside the 88 is another sound: dropped
