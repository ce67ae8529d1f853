"""Chord data sets: the paper's counts, the synthesis and features, and the Ray Data build."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torchaudio

from components.data.chords.reader import ChordData
from components.data.chords.recipe import ChordRecipe, chord_splits, jazznet_chords, jsb_chords_from_json
from components.data.chords.render import ChordFeaturizer, NoteBank
from components.data.features import FeatureConfig, LogMel, note_masks, power_to_db
from components.data.manifest import read_manifest, staging
from components.data.synthesis import Note, SynthConfig, Synthesizer
from components.errors import PartitaError
from tests.conftest import SMALL_CHORDS_LIMIT
from tests.entry_points import run_entry_point

RECIPE = ChordRecipe()


# --- chord sets and splits ----------------------------------------------------------


def test_jsb_counts_and_identity_match_the_czhuang_file(jsb_reference):
    table = jsb_chords_from_json(jsb_reference)
    sizes = (table > 0).sum(axis=1)
    assert len(table) == 3131
    assert {n: int((sizes == n).sum()) for n in (2, 3, 4)} == {2: 12, 3: 398, 4: 2721}
    assert len(np.unique(table[table > 0])) == 52

    # identity, derived independently: every time step with >= 2 notes, as a set of pitches
    raw = json.loads(jsb_reference.read_text())
    steps = {tuple(sorted(step)) for split in raw.values() for chorale in split for step in chorale if len(step) >= 2}
    splits = chord_splits("jsb-single", RECIPE, table)
    ours = {split: {tuple(int(p) for p in row if p >= 0) for row in rows} for split, rows in splits.pitches.items()}
    assert splits.counts() == {"train": 2191, "valid": 626, "test": 314}
    assert set().union(*ours.values()) == steps
    assert not (ours["train"] & ours["test"]) and not (ours["train"] & ours["valid"]) and not (ours["valid"] & ours["test"])


def test_jsb_multi_assigns_nine_distinct_instrument_sets_per_chord(jsb_reference):
    splits = chord_splits("jsb-multi", RECIPE, jsb_chords_from_json(jsb_reference))
    assert splits.counts() == {"train": 19719, "valid": 5634, "test": 2826}
    pitches, programs = splits.pitches["train"], splits.programs["train"]
    by_chord: dict[tuple, set] = {}
    for p, g in zip(pitches, programs):
        by_chord.setdefault(tuple(p), set()).add(tuple(g))
    assert all(len(assignments) == 9 for assignments in by_chord.values())
    assert set(np.unique(programs[pitches >= 0])) == {0, 40, 73}


def test_jazznet_formulas_give_the_paper_counts():
    by_size = jazznet_chords()
    assert {n: len(rows) for n, rows in by_size.items()} == {2: 654, 3: 689, 4: 884}
    every = np.concatenate([rows.ravel() for rows in by_size.values()])
    assert every.min() >= 36 and every.max() <= 96 and len(np.unique(every)) == 61
    triads = {tuple(r) for r in by_size[3]}
    assert {(60, 64, 67), (64, 67, 72), (67, 72, 76)} <= triads  # C major and its two inversions
    assert (60, 64, 67, 71) in {tuple(r) for r in by_size[4]}  # Cmaj7
    assert (60, 72) in {tuple(r) for r in by_size[2]}  # the octave


def test_jazznet_splits_hold_dyads_and_triads_then_unseen_tetrads():
    single = chord_splits("jazznet-single", RECIPE)
    multi = chord_splits("jazznet-multi", RECIPE)
    assert single.counts() == {"train": 1074, "valid": 269, "test": 884}
    assert multi.counts() == {"train": 19458, "valid": 5031, "test": 71604}  # the paper's Table 5
    sizes = {split: set((rows >= 0).sum(axis=1).tolist()) for split, rows in single.pitches.items()}
    assert sizes == {"train": {2, 3}, "valid": {2, 3}, "test": {4}}
    train = {tuple(r) for r in single.pitches["train"]}
    assert not train & {tuple(r) for r in single.pitches["valid"]}
    # all 3^n instrument assignments of every chord
    chord = tuple(multi.pitches["test"][0])
    assignments = {tuple(g) for p, g in zip(multi.pitches["test"], multi.programs["test"]) if tuple(p) == chord}
    assert len(assignments) == 81


def test_malformed_jsb_files_are_refused_with_the_problem_named(tmp_path):
    cases = {
        "not-json.json": "not json at all",
        "wrong-top.json": json.dumps([1, 2, 3]),
        "no-test.json": json.dumps({"train": [], "valid": []}),
        "bad-step.json": json.dumps({"train": [[[60, 64, 67, 72, 76]]], "valid": [], "test": []}),
    }
    expected = {"not-json.json": "not readable JSON", "wrong-top.json": "wrong shape", "no-test.json": "wrong shape", "bad-step.json": "at most 4 MIDI pitches"}
    for name, content in cases.items():
        (tmp_path / name).write_text(content)
        with pytest.raises(PartitaError, match=expected[name]):
            jsb_chords_from_json(tmp_path / name)
    with pytest.raises(PartitaError, match="does not exist"):
        jsb_chords_from_json(tmp_path / "absent.json")


# --- synthesis and features ---------------------------------------------------------


@pytest.fixture(scope="module")
def bank():
    notes = np.array([[48, 0], [60, 40], [67, 73], [72, 0]])
    return NoteBank(RECIPE, notes)


def test_a_render_does_not_depend_on_what_was_rendered_before():
    synth = Synthesizer(SynthConfig())
    note = [Note(0.0, 0.5, 60, 127)]
    first = synth.render(note, 0, 1.0)
    synth.render([Note(0.0, 0.9, 40, 127), Note(0.1, 0.9, 47, 100)], 40, 1.0)
    assert np.array_equal(first, synth.render(note, 0, 1.0))
    assert np.abs(first).max() > 0.01


def test_missing_soundfont_names_the_fix():
    with pytest.raises(PartitaError, match="apt-get install fluid-soundfont-gm|PARTITA_SOUNDFONT_DIRS"):
        Synthesizer(SynthConfig(soundfont="NoSuchFont"))
    with pytest.raises(PartitaError, match="does not exist"):
        Synthesizer(SynthConfig(soundfont="/nowhere/font.sf2"))


def test_chord_waveform_is_the_sum_of_its_notes(bank):
    synth = Synthesizer(RECIPE.synth)
    rows = bank.lookup(np.array([[48, 60, 67, -1]]), np.array([[0, 40, 73, -1]]))
    chord = bank.mix(rows)[0]
    # each note rendered alone, independently of the bank, then summed
    separate = []
    for pitch, program in ((48, 0), (60, 40), (67, 73)):
        audio = synth.render([Note(0.0, RECIPE.note_seconds, pitch, RECIPE.velocity)], program, 1.2)
        padded = np.concatenate([np.zeros(RECIPE.lead_silence, np.float32), audio])
        separate.append(torchaudio.functional.resample(torch.from_numpy(padded), 44100, 16000)[: RECIPE.features.samples])
    assert torch.allclose(chord, sum(separate), atol=1e-5)
    # the lead silence is there: the first 4000 samples at 44.1 kHz (~1451 at 16 kHz) are near zero
    assert chord[:1400].abs().max() < 1e-3 < chord[1600:3000].abs().max()


def test_spectrograms_follow_the_musicslots_recipe(bank):
    rows = bank.lookup(np.array([[48, 60, 67, -1], [72, -1, -1, -1]]), np.array([[0, 40, 73, -1], [0, -1, -1, -1]]))
    db = bank.mix_db(rows)
    reference = power_to_db(
        torchaudio.transforms.MelSpectrogram(sample_rate=16000, n_fft=1024, hop_length=512, n_mels=128)(bank.mix(rows))[..., :32].unsqueeze(1)
    )
    assert db.shape == (2, 1, 128, 32)
    assert torch.allclose(db, reference, atol=0.01)  # STFT summing == mel of the summed waveform
    peak = db.amax(dim=(1, 2, 3))
    floor = db.amin(dim=(1, 2, 3))
    assert torch.allclose(floor, peak - 80, atol=1e-4)  # top_db floor per example, not per batch
    assert peak[0] != peak[1]
    masks = note_masks(db, -30.0)
    assert masks.equal(db >= -30.0) and 0 < masks.float().mean() < 1


def test_power_to_db_refuses_inputs_without_a_channel_axis():
    with pytest.raises(ValueError, match="batch, channel"):
        power_to_db(torch.ones(2, 128, 32))


def test_logmel_matches_torchaudio_melspectrogram():
    config = FeatureConfig()
    waves = torch.randn(3, config.samples) * torch.tensor([[1.0], [0.1], [1e-3]])
    expected = power_to_db(torchaudio.transforms.MelSpectrogram(16000, n_fft=1024, hop_length=512, n_mels=128)(waves)[..., :32].unsqueeze(1))
    assert torch.allclose(LogMel(config)(waves), expected, atol=1e-3)


def test_featurizer_rows_carry_sorted_notes_aligned_programs_and_a_digest():
    featurizer = ChordFeaturizer(RECIPE.model_dump(mode="json"), [[48, 0], [60, 40], [67, 73]])
    table = featurizer({"example_id": np.array([7]), "pitches": np.array([[48, 60, 67, -1]]), "programs": np.array([[0, 40, 73, -1]])})
    row = table.to_pylist()[0]
    assert row["example_id"] == 7 and row["pitches"] == [48, 60, 67] and row["programs"] == [0, 40, 73]
    assert len(row["chord_db"]) == 128 * 32 and len(row["digest"]) == 32


# --- building on Ray Data -----------------------------------------------------------


def test_build_writes_splits_manifest_and_loads_back(small_chords):
    manifest = read_manifest(small_chords)
    counts = {split: entry["rows"] for split, entry in manifest["splits"].items()}
    expected = chord_splits("jazznet-multi", ChordRecipe(limit_chords=SMALL_CHORDS_LIMIT)).counts()
    assert counts == {**expected, "notes": counts["notes"]}
    assert manifest["vocab"]["programs"] == [0, 40, 73] and manifest["shapes"]["chord_db"] == [128, 32]
    assert len(manifest["soundfonts"]["FluidR3_GM"]["sha256"]) == 64
    data = ChordData(small_chords)
    valid = data.split("valid")
    assert len(valid) == counts["valid"]
    batch = valid.batch(torch.arange(5))
    assert batch["chord_db"].shape == (5, 1, 128, 32) and batch["note_db"].shape == (5, 4, 128, 32)
    # a chord's spectrogram is louder than or equal to each of its notes' almost everywhere
    for i in range(5):
        notes = batch["note_db"][i][batch["note_valid"][i]]
        assert (batch["chord_db"][i] >= notes - 1.0).float().mean() > 0.95


def test_rebuild_is_a_noop_and_the_content_is_independent_of_sharding(small_chords, capsys):
    from components.data.catalog import DataConfig
    from orchestration.data_build import build

    before = read_manifest(small_chords)
    config = DataConfig(name="jazznet-multi", root=str(small_chords.parent), chords={"limit_chords": SMALL_CHORDS_LIMIT})
    build(config)
    assert "up to date" in capsys.readouterr().out
    assert read_manifest(small_chords)["built"] == before["built"]
    build(config, force=True, workers=1)
    after = read_manifest(small_chords)
    assert after["content_hash"] == before["content_hash"]
    assert after["built"] >= before["built"]


def test_a_failed_build_leaves_nothing_that_looks_complete(tmp_path):
    final = tmp_path / "jsb-single"
    with pytest.raises(RuntimeError):
        with staging(final) as tmp:
            (tmp / "train").mkdir()
            (tmp / "train" / "part.parquet").write_bytes(b"half")
            raise RuntimeError("killed mid-way")
    assert not final.exists()
    assert not list(tmp_path.glob(".jsb-single.building-*"))


def test_truncated_or_edited_shards_are_detected(small_chords, tmp_path):
    import shutil

    copy = tmp_path / small_chords.name
    shutil.copytree(small_chords, copy)
    shard = sorted((copy / "valid").glob("*.parquet"))[0]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    with pytest.raises(PartitaError, match="truncated or edited"):
        ChordData(copy).split("valid")
    shard.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(PartitaError, match="checksum"):
        ChordData(copy).split("valid")


@pytest.mark.parametrize(
    "args, message",
    [
        (["nope"], "unknown data set 'nope'"),
        (["jazznet-single", "--set", "chords.synth.soundfont=NoSuchFont"], "soundfont 'NoSuchFont' not found"),
        (["jsb-single", "--jsb-json", "{bad}"], "wrong shape"),
        (["jazznet-single", "--set", "chords.velocty=3"], "config key 'chords.velocty' does not exist"),
    ],
)
def test_bad_build_input_exits_nonzero_with_one_line_and_writes_nothing(tmp_path, args, message, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"train": 1}))
    args = [str(bad) if a == "{bad}" else a for a in args]
    out = tmp_path / "out"
    result = run_entry_point(["partita", "data", "build", *args, "--out", str(out)], {}, capsys)
    assert result.returncode == 2
    assert message in result.stderr and "fix:" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists() or not any(p.name != "sources" for p in out.iterdir())
