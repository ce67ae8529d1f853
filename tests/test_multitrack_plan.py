"""Symbolic side of the multi-track sets: pieces, instrumentation, splits and bad input (no Ray)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from components.data.catalog import DataConfig, plan
from components.data.multitrack.arranger import ROLES, arrange
from components.data.multitrack.instruments import Assignment, assign
from components.data.multitrack.pieces import corpus_pieces, load_midi, midi_bytes, tidy
from components.data.multitrack.rolls import HIGHEST, LOWEST
from components.errors import PartitaError
from orchestration.config import load_data_config


def _items(built_plan) -> list[dict]:
    return [row for table in built_plan.items for row in table.to_pylist()]


def test_arranger_is_seeded_and_has_band_roles():
    a, b = arrange(3, 6, 30, 60), arrange(3, 6, 30, 60)
    assert midi_bytes(a) == midi_bytes(b)
    assert midi_bytes(arrange(4, 6, 30, 60)) != midi_bytes(a)
    assert [p.name for p in a.instruments] == list(ROLES)
    assert [p.is_drum for p in a.instruments] == [False, False, False, True, False, False]
    tidied = tidy(a, max_seconds=60)
    assert all(len(p.notes) > 10 for p in tidied.instruments)
    assert all(LOWEST <= n.pitch <= HIGHEST for p in tidied.instruments for n in p.notes)
    assert 20 <= tidied.get_end_time() <= 60.5
    assert [p.name for p in arrange(5, 4, 30, 60).instruments] == ["bass", "comping", "melody", "drums"]


def test_a_set_built_to_another_recipe_gets_its_own_folder():
    assert DataConfig(name="slakh-like").folder_name() == "slakh-like"
    tiny, other = (DataConfig(name="slakh-like", multitrack={"pieces": n}).folder_name() for n in (6, 7))
    assert tiny.startswith("slakh-like-") and tiny != other
    assert DataConfig(name="slakh-like", multitrack={"pieces": 6}).folder_name() == tiny  # stable: found again
    # only the set's own recipe section counts
    assert DataConfig(name="piano-domains", multitrack={"pieces": 6}).folder_name() == "piano-domains"
    assert DataConfig(name="jsb-multi", chords={"limit_chords": 50}).folder_name().startswith("jsb-multi-")


def test_band_pieces_have_piano_guitar_bass_and_drums_and_the_same_notes(tmp_path):
    from components.data.multitrack.taxonomy import DRUMS, load_classes

    classes = load_classes()

    def pieces(band_fraction):
        recipe = {"pieces": 8, "music21_fraction": 0, "min_seconds": 6, "max_seconds": 8, "band_fraction": band_fraction}
        return {r["piece"]: r for r in _items(plan(DataConfig(name="slakh-like", multitrack=recipe), tmp_path))}

    def instruments(row):
        return {classes.classes[classes.class_of(DRUMS if drum else program)] for program, drum in zip(row["programs"], row["is_drum"])}

    band, free = pieces(1.0), pieces(0.0)
    assert all({"Piano", "Electric Guitar", "Bass", "Drums"} <= instruments(row) for row in band.values())
    assert sum({"Piano", "Electric Guitar"} <= instruments(row) for row in free.values()) < len(free) / 2
    for name, row in band.items():  # the band changes instruments only: notes, parts and splits stay
        assert row["note_pitch"] == free[name]["note_pitch"] and row["part_names"] == free[name]["part_names"]
        assert row["split"] == free[name]["split"]


def test_splits_never_share_a_piece(tmp_path):
    config = DataConfig(name="slakh-like", multitrack={"pieces": 20, "music21_fraction": 0, "max_seconds": 20, "min_seconds": 10})
    built = plan(config, tmp_path)
    rows = _items(built)
    assert built.counts == {"train": 16, "valid": 2, "test": 2}
    pieces_by_split = {split: {r["piece"] for r in rows if r["split"] == split} for split in built.counts}
    assert sum(map(len, pieces_by_split.values())) == len({r["piece"] for r in rows}) == 20
    # the same pieces and instrumentation whatever the build; a changed seed changes them
    assert rows == _items(plan(config, tmp_path))
    other = plan(config.model_copy(update={"multitrack": config.multitrack.model_copy(update={"seed": 1})}), tmp_path)
    assert other.recipe_hash != built.recipe_hash
    # parts draw varied programs and all three soundfonts; 4 to 6 parts per piece
    parts = [len(r["soundfonts"]) for r in rows]
    assert min(parts) >= 4 and max(parts) <= 6
    assert set(font for r in rows for font in r["soundfonts"]) == {"FluidR3_GM", "TimGM6mb", "MuseScore_General_Lite"}
    programs = Counter(p for r in rows for p, drum in zip(r["programs"], r["is_drum"]) if not drum)
    assert len(programs) > 20


def test_music21_scores_are_derived_once_and_cached(tmp_path):
    (path, first), = corpus_pieces(1, seed=0, cache=tmp_path)
    assert path.startswith("bach/") and 3 <= len(first.instruments) <= 6
    cached = tmp_path / "music21" / (path.rsplit(".", 1)[0] + ".mid")
    assert cached.is_file()
    (_, again), = corpus_pieces(1, seed=0, cache=tmp_path)
    assert midi_bytes(again) == midi_bytes(load_midi(cached))


def test_piano_domain_splits(tmp_path):
    config = DataConfig(name="piano-domains", pianos={"pieces": 16, "music21_fraction": 0, "max_seconds": 5})
    built = plan(config, tmp_path)
    rows = _items(built)
    recipe = config.pianos
    by_split = {split: [r for r in rows if r["split"] == split] for split in built.counts}
    test_pieces = {r["piece_id"] for r in by_split["test"]}
    valid_pieces = {r["piece_id"] for r in by_split["valid"]}
    assert len(test_pieces) == 6 and len(valid_pieces) == 2 and not test_pieces & valid_pieces
    assert {r["piano"] for r in by_split["test"]} == set(recipe.test_pianos)
    assert {r["piano"] for r in by_split["train"]} <= set(recipe.train_pianos)
    assert {r["piano"] for r in by_split["canonical"]} == {recipe.canonical}
    assert len(by_split["canonical"]) == 16 and len(by_split["dictionary"]) == 88
    # "All": 5 of the 6 test pieces also appear in train (flagged); "No Overlap" drops exactly those
    train_pieces = {r["piece_id"] for r in by_split["train"]}
    overlapping = {r["piece_id"] for r in by_split["train"] if r["overlap"]}
    assert overlapping == train_pieces & test_pieces and len(overlapping) == 5
    assert not {r["piece_id"] for r in by_split["train"] if not r["overlap"]} & (test_pieces | valid_pieces)


def test_a_corrupt_midi_file_is_named(tmp_path):
    corrupt = tmp_path / "broken.mid"
    corrupt.write_bytes(b"MThd\x00\x00\x00\x06\x00\x01\x00\x02\x01\xe0MTrk\x00\x00\xff\xff garbage")
    with pytest.raises(PartitaError, match="MIDI file .*broken.mid.* is unreadable"):
        load_midi(corrupt)
    config = DataConfig(name="slakh-like", multitrack={"pieces": 1, "music21_fraction": 0, "midi_files": [str(tmp_path / "*.mid")]})
    with pytest.raises(PartitaError, match="broken.mid") as err:
        plan(config, tmp_path)
    assert err.value.fix
    with pytest.raises(PartitaError, match="matches no file"):
        plan(config.model_copy(update={"multitrack": config.multitrack.model_copy(update={"midi_files": ["/nowhere/*.mid"]})}), tmp_path)


def test_midi_files_keep_their_programs(tmp_path):
    piece = tidy(arrange(1, 4, 10, 10), 10)
    for part, program in zip(piece.instruments, (33, 0, 73)):
        part.program = program
    (tmp_path / "song.mid").write_bytes(midi_bytes(piece))
    config = DataConfig(name="slakh-like", multitrack={"pieces": 1, "music21_fraction": 0, "midi_files": [str(tmp_path / "song.mid")]})
    rows = {r["piece"]: r for r in _items(plan(config, tmp_path))}
    song = rows[f"midi/{tmp_path / 'song.mid'}"]
    assert set(rows) == {"arranger/0-00000", song["piece"]}
    assert song["programs"][:3] == [33, 0, 73] and song["is_drum"] == [False, False, False, True]


def test_a_missing_soundfont_is_named(tmp_path):
    with pytest.raises(PartitaError, match="soundfont 'NoSuchFont' not found") as err:
        plan(DataConfig(name="slakh-like", multitrack={"pieces": 1, "soundfonts": ["NoSuchFont"]}), tmp_path)
    assert "PARTITA_SOUNDFONT_DIRS" in err.value.fix
    with pytest.raises(PartitaError, match="soundfont file '/no/such.sf2' does not exist"):
        plan(DataConfig(name="piano-domains", pianos={"pieces": 1, "test_pianos": ["/no/such.sf2:0"]}), tmp_path)
    with pytest.raises(PartitaError, match="is not SOUNDFONT:PROGRAM"):
        load_data_config({"name": "piano-domains"}, ["pianos.canonical=FluidR3_GM"])


def test_unknown_role_or_program_without_a_soundfont():
    rng = np.random.default_rng(0)
    presets = {"Small": {(0, 0), (128, 0)}}
    assert assign("drums", rng, presets) == Assignment(program=0, is_drum=True, soundfont="Small")
    assert assign("comping", rng, presets).program == 0  # the only comping program the soundfont has
    with pytest.raises(PartitaError, match="unknown part role 'kazoo'"):
        assign("kazoo", rng, presets)
    with pytest.raises(PartitaError, match="no configured soundfont has GM program 40"):
        assign("melody", rng, presets, program=40)
    with pytest.raises(PartitaError, match="no configured soundfont has a preset for the bass role"):
        assign("bass", rng, presets)
