"""The build plan of a piano-domain data set (Kelz): which piano renders which piece, per split.

Pieces come from the same sources as the slakh-like set (music21 scores and the
arranger) with all pitched parts merged into one piano part; random streams per
(seed, source, index) as there.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pretty_midi
import pyarrow as pa

from components.data.build_plan import BuildPlan
from components.data.multitrack.arranger import arrange
from components.data.multitrack.pieces import SCORE_FIELDS, corpus_pieces, score_columns, score_digest, tidy
from components.data.multitrack.plan import BYTES_PER_WRITE, piece_rng, soundfont_presets
from components.data.multitrack.rolls import KEYS, LOWEST
from components.data.pianos.recipe import PianoDomainsRecipe, parse_piano
from components.data.pianos.render import DICTIONARY, PianoRenderer, pianos, row_schema
from components.data.soundfonts import checksum, resolve
from components.errors import PartitaError


def plan_piano_domains(name: str, r: PianoDomainsRecipe, sources: Path) -> BuildPlan:
    """`sources` caches the music21 scores derived as MIDI."""
    all_pianos = pianos(r)
    presets = soundfont_presets(sorted({parse_piano(p)[0] for p in all_pianos}))
    for piano in all_pianos:
        soundfont, program = parse_piano(piano)
        if (0, program) not in presets[soundfont]:
            raise PartitaError(f"soundfont {soundfont} has no preset for piano {piano}", "choose another SOUNDFONT:PROGRAM")

    n_corpus = round(r.pieces * r.music21_fraction)
    pieces = []  # (name, one-part piano MIDI)
    for k, (path, score) in enumerate(corpus_pieces(n_corpus, r.seed, sources)):
        rng = piece_rng(r.seed, "music21", k)
        pieces.append((f"music21/{path}", _piano_part(tidy(score, r.max_seconds, 60.0 / rng.uniform(60, 110)), rng, r.max_seconds)))
    for k in range(r.pieces - n_corpus):
        rng = piece_rng(r.seed, "arranger", k)
        score = arrange(int(rng.integers(2**31)), 3, r.max_seconds, r.max_seconds)  # bass, comping, melody
        pieces.append((f"arranger/{r.seed}-{k:05d}", _piano_part(tidy(score, r.max_seconds), rng, r.max_seconds)))

    rng = piece_rng(r.seed, "splits", 0)
    order = rng.permutation(len(pieces))
    n_test, n_valid = round(r.test_fraction * len(pieces)), round(r.valid_fraction * len(pieces))
    test, valid, train = order[:n_test], order[n_test : n_test + n_valid], order[n_test + n_valid :]
    overlapping = test[: round(r.overlap_fraction * n_test)]
    renderings = [("canonical", p, r.canonical, False) for p in range(len(pieces))]
    renderings += [("test", p, piano, False) for p in sorted(test) for piano in r.test_pianos]
    renderings += [("valid", p, piano, False) for p in sorted(valid) for piano in r.valid_pianos]
    for p in sorted([*train, *overlapping]):
        chosen = rng.choice(len(r.train_pianos), r.train_pianos_per_piece, replace=False)
        renderings += [("train", p, r.train_pianos[c], p in overlapping) for c in sorted(chosen)]
    renderings.sort(key=lambda item: (SPLITS_ORDER.index(item[0]), item[1], item[2]))
    dictionary = [(pitch, _note_midi(pitch, r.dictionary_velocity, r.dictionary_seconds)) for pitch in range(LOWEST, LOWEST + KEYS)]

    scores = [score_columns(midi) for _, midi in pieces]
    rows = [
        {"piece_id": int(p), "piece": pieces[p][0], "piano": piano, "overlap": bool(overlap), **scores[p], "split": split}
        for split, p, piano, overlap in renderings
    ]
    rows += [
        {"piece_id": -1, "piece": f"note/{pitch}", "piano": r.canonical, "overlap": False, **score_columns(midi), "split": DICTIONARY}
        for pitch, midi in dictionary
    ]
    digest = hashlib.sha256()
    for example_id, row in enumerate(rows):
        row["example_id"] = example_id
        digest.update(f"{row['split']}|{row['piece']}|{row['piano']}|{row['overlap']}|".encode() + score_digest(row))
    schema = pa.schema(
        [("example_id", pa.int64()), ("piece_id", pa.int64()), ("piece", pa.string()), ("piano", pa.string()), ("overlap", pa.bool_()), *SCORE_FIELDS, ("split", pa.string())]
    )
    table = pa.Table.from_pylist(rows, schema=schema)
    fonts = {name: resolve(name) for name in presets}
    return BuildPlan(
        name=name,
        kind="piano-domains",
        recipe={
            "dataset": name,
            "pianos": r.model_dump(mode="json"),
            "soundfont_sha256": {name: checksum(path) for name, path in fonts.items()},
            "pieces_sha256": digest.hexdigest(),
        },
        items=[table.slice(start, _PIANO_BLOCK) for start in range(0, len(table), _PIANO_BLOCK)],
        worker=PianoRenderer,
        worker_kwargs={"recipe": r.model_dump(mode="json")},
        batch_size=1,
        min_bytes_per_write=BYTES_PER_WRITE,
        info={
            "soundfonts": {name: {"path": str(path), "sha256": checksum(path)} for name, path in fonts.items()},
            "domains": {"canonical": r.canonical, "train": list(r.train_pianos), "valid": list(r.valid_pianos), "test": list(r.test_pianos)},
            "pieces": {"train_only": len(train), "valid": len(valid), "test": len(test), "test_in_train": len(overlapping)},
            "frame_rate": r.frame_rate,
            "shapes": {"mel": [r.n_mels, "n_frames"], "roll": [KEYS, "n_frames"]},
            "schema": row_schema().to_string(show_schema_metadata=False),
        },
    )


SPLITS_ORDER = ("canonical", "train", "valid", "test")
_PIANO_BLOCK = 4  # renderings per block: a 30 s piece renders in well under a second


def _piano_part(midi: pretty_midi.PrettyMIDI, rng: np.random.Generator, max_seconds: float) -> pretty_midi.PrettyMIDI:
    """All pitched parts merged into one piano part, with a level per part and some variation per note."""
    merged = pretty_midi.Instrument(program=0, name="piano")
    for part in midi.instruments:
        if part.is_drum:
            continue
        level = rng.uniform(50, 100)
        merged.notes += [
            pretty_midi.Note(int(np.clip(round(level + rng.normal(0, 8)), 1, 127)), n.pitch, n.start, n.end) for n in part.notes
        ]
    midi.instruments = [merged]
    return tidy(midi, max_seconds)  # merged parts can double a key: cut the overlaps


def _note_midi(pitch: int, velocity: int, seconds: float) -> pretty_midi.PrettyMIDI:
    midi = pretty_midi.PrettyMIDI(initial_tempo=60.0)
    part = pretty_midi.Instrument(program=0, name="piano")
    part.notes = [pretty_midi.Note(velocity, pitch, 0.0, seconds)]
    midi.instruments.append(part)
    return midi
