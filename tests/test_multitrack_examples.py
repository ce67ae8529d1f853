"""Example makers on a tiny piece: segments, the saliency filter, mixing, features, rolls, tPSA."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torchaudio

from components.data.multitrack.examples import choices, piece_examples, piece_segments, stack
from components.data.multitrack.featurize import ExampleStage, ViewFeaturizer, piece_locations
from components.data.multitrack.fixed import FixedExamples
from components.data.multitrack.reader import Piece
from components.data.multitrack.rolls import NoteTable
from components.data.multitrack.segments import SegmentConfig
from components.data.multitrack.view import ViewConfig
from components.losses.separation import tpsa_loss

RATE = 16000


def tiny_piece(seconds: float = 10.5) -> Piece:
    """Stems: 0 a loud 440 Hz tone, 1 a tone at -40 dBFS (not salient), 2 a loud 660 Hz tone; one note each."""
    t = np.arange(int(seconds * RATE)) / RATE
    levels = [0.3, 0.01 * np.sqrt(2), 0.3]  # RMS -13.5, -40, -13.5 dBFS
    stems = np.stack([a * np.sin(2 * np.pi * f * t) for a, f in zip(levels, (440.0, 550.0, 660.0))])
    pcm = np.round(stems * 32768).astype("<i2")
    notes = NoteTable(np.array([0, 1, 2], np.int16), np.array([69, 73, 76], np.int16), np.array([90, 90, 90], np.int16), np.array([0.5, 0.5, 6.0]), np.array([4.0, 4.0, 9.0]))
    return Piece(7, "tiny", "test", RATE, ["a", "b", "c"], [0, 40, 24], [False] * 3, ["X"] * 3, ["Piano", "Violin", "Acoustic Guitar"], ["l"] * 3, pcm, notes, [], np.zeros(0, np.uint8), b"")


def view(**fields) -> ViewConfig:
    return ViewConfig(segment=SegmentConfig(seconds=5.0, hop_seconds=5.0), **fields)


def test_segments_cover_whole_segments_only_and_drop_quiet_stems():
    found = piece_segments(tiny_piece(), view())
    assert found.starts.tolist() == [0, 5 * RATE] and found.length == 5 * RATE  # 10.5 s: two whole 5 s segments
    assert found.salient[:, 0].tolist() == [True, False, True]
    np.testing.assert_allclose(found.level_dbfs[1], -40.0, atol=0.1)
    assert not piece_segments(tiny_piece(4.0), view()).starts.size  # shorter than a segment: none


def test_a_view_naming_classes_measures_only_their_stems_and_keeps_the_same_segments():
    everything, named = piece_segments(tiny_piece(), view()), piece_segments(tiny_piece(), view(classes=["Piano", "Acoustic Guitar"]))
    assert named.starts.tolist() == everything.starts.tolist()
    np.testing.assert_array_equal(named.salient[[0, 2]], everything.salient[[0, 2]])
    np.testing.assert_array_equal(named.level_dbfs[[0, 2]], everything.level_dbfs[[0, 2]])
    assert not named.salient[1].any() and (named.level_dbfs[1] == -200.0).all()  # the Violin is not measured


def test_examples_mix_two_salient_stems_exactly():
    piece = tiny_piece()
    examples = piece_examples(piece, view(), seed=0)
    assert len(examples) == 2
    for example, start in zip(examples, (0, 5 * RATE)):
        assert example["start"] == start and example["piece"] == 7
        expected = piece.stems[[0, 2], start : start + 5 * RATE]  # stem 1 is below -30 dBFS: never a target
        np.testing.assert_array_equal(example["sources"], expected)
        np.testing.assert_array_equal(example["mixture"], example["sources"].sum(axis=0))


def test_class_views_take_one_stem_per_class_and_choices_are_seeded():
    salient = np.array([True, False, True])
    classes = ["Piano", "Violin", "Acoustic Guitar"]
    assert choices(salient, classes, view(sources=2, classes=["Acoustic Guitar", "Piano"]), np.random.default_rng(0)) == [(2, 0)]
    assert choices(salient, classes, view(sources=2, classes=["Violin", "Piano"]), np.random.default_rng(0)) == []
    many = np.ones(5, bool)
    draw = lambda seed: choices(many, ["x"] * 5, view(examples_per_segment=3), np.random.default_rng(seed))  # noqa: E731
    assert draw(1) == draw(1) and len(set(draw(1))) == 3


def test_features_match_torch_stft_and_torchaudio():
    v = view(targets=["magnitude", "phase_sensitive"], features=["stft", "logmel"], stft={"n_fft": 512, "hop_length": 128})
    batch = stack(piece_examples(tiny_piece(), v, seed=0))
    out = ViewFeaturizer(v, RATE).featurize_numpy(batch)
    mixture = torch.from_numpy(batch["mixture"])
    reference = torch.stft(mixture, 512, 128, window=torch.hann_window(512), center=True, pad_mode="reflect", return_complex=True)
    np.testing.assert_allclose(out["mix_mag"], reference.abs().numpy(), rtol=1e-5, atol=1e-4)
    assert out["mix_mag"].shape == (2, 257, v.frames(RATE))
    mel = torchaudio.transforms.MelSpectrogram(RATE, n_fft=512, hop_length=128, n_mels=128, power=2.0)(mixture)
    db = torchaudio.functional.amplitude_to_DB(mel, 10.0, 1e-10, 0.0, top_db=80.0)
    np.testing.assert_allclose(out["mix_logmel"], db.numpy(), atol=1e-3)
    sources = torch.stft(torch.from_numpy(batch["sources"]).reshape(-1, 5 * RATE), 512, 128, window=torch.hann_window(512), return_complex=True)
    np.testing.assert_allclose(out["target_mag"], sources.abs().reshape(2, 2, 257, -1).numpy(), rtol=1e-5, atol=1e-4)
    # the phase-sensitive target lies in [0, |X|], and the ideal mask (target / |X|) makes the tPSA loss vanish
    psa, mag = torch.from_numpy(out["target_psa"]), torch.from_numpy(out["mix_mag"])
    assert (psa >= 0).all() and (psa <= mag.unsqueeze(1) + 1e-6).all()
    ideal = psa / mag.clamp_min(1e-8).unsqueeze(1)
    assert tpsa_loss(ideal, mag, psa) < 1e-6 < tpsa_loss(torch.full_like(ideal, 0.5), mag, psa)
    assert "mixture" not in out and "mixture" in ViewFeaturizer(v, RATE, keep_waveforms=True).featurize_numpy(batch)


def test_rolls_follow_the_stft_frame_rate():
    v = view(conditioning=["rolls"], stft={"n_fft": 1024, "hop_length": 320})  # 50 frames/s
    second = piece_examples(tiny_piece(), v, seed=0)[1]  # from 5 s: stem 2's note sounds 6-9 s, stem 0's none
    rolls = second["rolls"]
    assert rolls.shape == (2, 88, v.frames(RATE))
    assert not rolls[0].any()
    active = np.flatnonzero(rolls[1, 76 - 21])
    assert (active[0], active[-1]) == (50, 199)  # onset at 1 s into the segment, offset at 4 s (frame 200)


def test_the_ray_data_stage_yields_one_featurised_batch_per_piece_and_skips_empty_ones(tmp_path):
    rows = []
    for example_id, piece in ((7, tiny_piece()), (8, tiny_piece(3.0))):
        notes = {f"note_{f}": getattr(piece.notes, f).tolist() for f in ("part", "pitch", "velocity", "start", "end")}
        rows.append({"example_id": example_id, "sample_rate": RATE, "stems": piece.stems_pcm.tobytes(), "stem_names": piece.stem_names, "stem_classes": piece.stem_classes} | notes)
    path = tmp_path / "pieces.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=1)
    locations = piece_locations([path])
    assert [loc["row_group"] for loc in locations] == [0, 1]
    columns = {key: np.array([loc[key] for loc in locations]) for key in ("path", "row_group")}
    batches = list(ExampleStage(view().model_dump(), seed=0, sample_rate=RATE)(columns))
    assert len(batches) == 1 and batches[0]["target_psa"].shape == (2, 2, 513, view().frames(RATE))
    assert "mixture" not in batches[0] and batches[0]["piece"].tolist() == [7, 7]
    on_trainer = list(ExampleStage(view(featurise_on="trainer").model_dump(), seed=0, sample_rate=RATE)(columns))
    assert set(on_trainer[0]) == {"mixture", "sources", "piece", "start"}


def test_fixed_examples_rebuild_the_exact_mixture():
    examples = piece_examples(tiny_piece(), view(), seed=0)
    arrays = {"sources": np.stack([np.round(e["sources"] * 32768).astype(np.int16) for e in examples]), "piece": np.array([7, 7]), "start": np.array([0, 5 * RATE])}
    fixed = FixedExamples(arrays)
    batch = next(fixed.batches(8))
    assert len(fixed) == 2
    np.testing.assert_array_equal(batch["mixture"].numpy(), np.stack([e["mixture"] for e in examples]))


def test_view_configs_are_validated_at_load():
    with pytest.raises(ValueError, match="names 1 classes but view.sources is 2"):
        view(classes=["Piano"])
    with pytest.raises(ValueError):
        view(targets=["loudness"])
