"""Build plans of the multi-track (slakh-like) and piano-domain data sets.

Planning is symbolic and runs on the driver: choose and arrange the pieces,
assign instruments and soundfonts, split by piece, and serialise each piece as
MIDI into a work item. Rendering happens in the workers. Pieces get their own
random streams (seed, source, index), so a piece does not change when others
are added; only the split assignment depends on the whole set.
"""

from __future__ import annotations

import glob
import hashlib
from pathlib import Path

import numpy as np
import pretty_midi
import pyarrow as pa

from components.datasets import BuildPlan, DataConfig
from components.errors import PartitaError
from components.multitrack import pianos as piano_worker
from components.multitrack.arranger import arrange
from components.multitrack.instruments import DRUM_KITS, assign
from components.multitrack.pieces import SCORE_FIELDS, corpus_pieces, load_midi, roles, score_columns, score_digest, tidy
from components.multitrack.recipes import parse_piano
from components.multitrack.render import MultitrackRenderer, row_schema
from components.multitrack.rolls import KEYS, LOWEST
from components.multitrack.taxonomy import load_classes, load_hierarchy
from components.soundfonts import checksum, resolve
from components.synthesis import SynthConfig, Synthesizer

SPLITS = ("train", "valid", "test")
SOURCES = ("music21", "arranger", "midi")
STREAMS = (*SOURCES, "splits")  # independent random streams of a seed


def plan_slakh_like(config: DataConfig, sources: Path) -> BuildPlan:
    r = config.multitrack
    presets = soundfont_presets(r.soundfonts)
    classes, hierarchy = load_classes(r.classes), load_hierarchy(r.hierarchy)
    n_corpus = round(r.pieces * r.music21_fraction)

    pieces = []  # (name, source, midi, soundfonts)
    for k, (path, score) in enumerate(corpus_pieces(n_corpus, r.seed, sources)):
        rng = _rng(r.seed, "music21", k)
        midi = tidy(score, r.max_seconds, time_scale=60.0 / rng.uniform(60, 110))
        for part in midi.instruments:  # the corpus has no dynamics: a level per part, a little variation per note
            level = rng.uniform(70, 105)
            for note in part.notes:
                note.velocity = int(np.clip(round(level + rng.normal(0, 6)), 1, 127))
        pieces.append((f"music21/{path}", "music21", *_instrumented(midi, rng, presets)))
    for k in range(r.pieces - n_corpus):
        rng = _rng(r.seed, "arranger", k)
        n_parts = int(rng.integers(r.min_parts, r.max_parts + 1))
        midi = tidy(arrange(int(rng.integers(2**31)), n_parts, r.min_seconds, r.max_seconds), r.max_seconds)
        pieces.append((f"arranger/{r.seed}-{k:05d}", "arranger", *_instrumented(midi, rng, presets)))
    for k, path in enumerate(_expand(r.midi_files)):
        midi = tidy(load_midi(path), r.max_seconds)
        if not midi.instruments:
            raise PartitaError(f"MIDI file {str(path)!r} has no notes", "remove it from midi_files")
        pieces.append((f"midi/{path}", "midi", *_instrumented(midi, _rng(r.seed, "midi", k), presets, keep_programs=True)))

    splits = _split([source for _, source, _, _ in pieces], r.valid_fraction, r.test_fraction, r.seed)
    schema = pa.schema([("example_id", pa.int64()), ("piece", pa.string()), ("source", pa.string()), ("soundfonts", pa.list_(pa.string())), *SCORE_FIELDS, ("split", pa.string())])
    items, digest, seconds = [], hashlib.sha256(), dict.fromkeys(SPLITS, 0.0)
    for example_id, ((name, source, midi, fonts), split) in enumerate(zip(pieces, splits)):
        score = score_columns(midi)
        digest.update(f"{name}|{split}|{','.join(fonts)}|".encode() + score_digest(score))
        length = np.ceil((midi.get_end_time() + r.tail_seconds) * r.sample_rate) / r.sample_rate
        seconds[split] += length
        row = {"example_id": example_id, "piece": name, "source": source, "soundfonts": fonts, **score, "split": split}
        items.append((-length * len(fonts), example_id, pa.Table.from_pylist([row], schema=schema)))
    # one piece per block, the most stem-seconds first: the actor pool balances pieces, and
    # the short ones left at the end keep both workers busy to the finish
    items = [table for *_, table in sorted(items, key=lambda item: item[:2])]
    fonts = {name: resolve(name) for name in r.soundfonts}
    return BuildPlan(
        name=config.name,
        kind="multitrack",
        recipe={
            "dataset": config.name,
            "multitrack": r.model_dump(mode="json"),
            "soundfont_sha256": {name: checksum(path) for name, path in fonts.items()},
            "taxonomy_sha256": {"classes": classes.sha256, "hierarchy": hierarchy.sha256},
            "pieces_sha256": digest.hexdigest(),
        },
        items=items,
        worker=MultitrackRenderer,
        worker_kwargs={"recipe": r.model_dump(mode="json")},
        batch_size=1,
        min_bytes_per_write=_BYTES_PER_WRITE,
        info={
            "soundfonts": {name: {"path": str(path), "sha256": checksum(path)} for name, path in fonts.items()},
            "hours": {split: round(float(s) / 3600, 4) for split, s in seconds.items() if s},
            "sample_rate": r.sample_rate,
            "frame_rate": r.frame_rate,
            "shapes": {"stems": ["stems", "samples"], "rolls": ["roll_classes", 3, KEYS, "n_frames"]},
            "schema": row_schema().to_string(show_schema_metadata=False),
            "taxonomies": {
                "classes": {"name": classes.name, "version": classes.version, "classes": list(classes.classes)},
                "hierarchy": {"name": hierarchy.name, "version": hierarchy.version, "parents": hierarchy.parents},
            },
        },
    )


def plan_piano_domains(config: DataConfig, sources: Path) -> BuildPlan:
    r = config.pianos
    all_pianos = piano_worker.pianos(r)
    presets = soundfont_presets(sorted({parse_piano(p)[0] for p in all_pianos}))
    for piano in all_pianos:
        soundfont, program = parse_piano(piano)
        if (0, program) not in presets[soundfont]:
            raise PartitaError(f"soundfont {soundfont} has no preset for piano {piano}", "choose another SOUNDFONT:PROGRAM")

    n_corpus = round(r.pieces * r.music21_fraction)
    pieces = []  # (name, one-part piano MIDI)
    for k, (path, score) in enumerate(corpus_pieces(n_corpus, r.seed, sources)):
        rng = _rng(r.seed, "music21", k)
        pieces.append((f"music21/{path}", _piano_part(tidy(score, r.max_seconds, 60.0 / rng.uniform(60, 110)), rng, r.max_seconds)))
    for k in range(r.pieces - n_corpus):
        rng = _rng(r.seed, "arranger", k)
        score = arrange(int(rng.integers(2**31)), 3, r.max_seconds, r.max_seconds)  # bass, comping, melody
        pieces.append((f"arranger/{r.seed}-{k:05d}", _piano_part(tidy(score, r.max_seconds), rng, r.max_seconds)))

    rng = _rng(r.seed, "splits", 0)
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
        {"piece_id": -1, "piece": f"note/{pitch}", "piano": r.canonical, "overlap": False, **score_columns(midi), "split": piano_worker.DICTIONARY}
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
        name=config.name,
        kind="piano-domains",
        recipe={
            "dataset": config.name,
            "pianos": r.model_dump(mode="json"),
            "soundfont_sha256": {name: checksum(path) for name, path in fonts.items()},
            "pieces_sha256": digest.hexdigest(),
        },
        items=[table.slice(start, _PIANO_BLOCK) for start in range(0, len(table), _PIANO_BLOCK)],
        worker=piano_worker.PianoRenderer,
        worker_kwargs={"recipe": r.model_dump(mode="json")},
        batch_size=1,
        min_bytes_per_write=_BYTES_PER_WRITE,
        info={
            "soundfonts": {name: {"path": str(path), "sha256": checksum(path)} for name, path in fonts.items()},
            "domains": {"canonical": r.canonical, "train": list(r.train_pianos), "valid": list(r.valid_pianos), "test": list(r.test_pianos)},
            "pieces": {"train_only": len(train), "valid": len(valid), "test": len(test), "test_in_train": len(overlapping)},
            "frame_rate": r.frame_rate,
            "shapes": {"mel": [r.n_mels, "n_frames"], "roll": [KEYS, "n_frames"]},
            "schema": piano_worker.row_schema().to_string(show_schema_metadata=False),
        },
    )


SPLITS_ORDER = ("canonical", "train", "valid", "test")
_PIANO_BLOCK = 4  # renderings per block: a 30 s piece renders in well under a second
_BYTES_PER_WRITE = 256 << 20  # 5-10 rendered pieces per Parquet file


def soundfont_presets(names) -> dict[str, set[tuple[int, int]]]:
    """soundfont -> its (bank, program) presets among GM programs and the GM kits; loads each once."""
    presets = {}
    for name in names:
        synth = Synthesizer(SynthConfig(soundfont=name))
        presets[name] = {(0, p) for p in range(128) if synth.has_preset(p)} | {(128, k) for k in DRUM_KITS if synth.has_preset(k, 128)}
        synth.close()
    return presets


def _rng(seed: int, stream: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, STREAMS.index(stream), index])


def _instrumented(midi: pretty_midi.PrettyMIDI, rng: np.random.Generator, presets: dict, keep_programs: bool = False) -> tuple:
    """The piece with a program per part, and each part's soundfont."""
    fonts = []
    for part, role in zip(midi.instruments, roles(midi)):
        keep = keep_programs and not part.is_drum
        choice = assign(role, rng, presets, program=part.program if keep else None)
        part.program, part.is_drum = choice.program, choice.is_drum
        fonts.append(choice.soundfont)
    return midi, fonts


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


def _split(sources: list[str], valid_fraction: float, test_fraction: float, seed: int) -> list[str]:
    """A split per piece: sources interleaved after shuffling, so every split mixes them."""
    rng = _rng(seed, "splits", 0)
    by_source = [list(rng.permutation([i for i, s in enumerate(sources) if s == source])) for source in SOURCES]
    order = [queue[k] for k in range(max(map(len, by_source), default=0)) for queue in by_source if k < len(queue)]
    n = len(order)
    n_test, n_valid = (round(test_fraction * n), round(valid_fraction * n))
    if n >= 3:  # small sets still get a piece in each split that has a fraction
        n_test, n_valid = max(n_test, test_fraction > 0), max(n_valid, valid_fraction > 0)
    splits = [""] * n
    for rank, piece in enumerate(order):
        splits[piece] = "test" if rank < n_test else "valid" if rank < n_test + n_valid else "train"
    return splits


def _expand(patterns: list[str]) -> list[Path]:
    paths = []
    for pattern in patterns:
        matches = sorted(glob.glob(str(Path(pattern).expanduser()), recursive=True))
        if not matches:
            raise PartitaError(f"MIDI pattern {pattern!r} matches no file", "check the path or glob in midi_files")
        paths += [Path(m) for m in matches]
    return paths
