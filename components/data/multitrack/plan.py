"""The build plan of a multi-track (slakh-like) data set.

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

from components.data.build_plan import BuildPlan
from components.data.multitrack.arranger import arrange
from components.data.multitrack.instruments import BAND_PROGRAMS, DRUM_KITS, assign
from components.data.multitrack.pieces import SCORE_FIELDS, corpus_pieces, load_midi, roles, score_columns, score_digest, tidy
from components.data.multitrack.recipe import MultitrackRecipe
from components.data.multitrack.render import MultitrackRenderer, row_schema
from components.data.multitrack.rolls import KEYS
from components.data.multitrack.taxonomy import load_classes, load_hierarchy
from components.data.soundfonts import checksum, resolve
from components.data.synthesis import SynthConfig, Synthesizer
from components.errors import PartitaError

SPLITS = ("train", "valid", "test")
SOURCES = ("music21", "arranger", "midi")
STREAMS = (*SOURCES, "splits", "band")  # independent random streams of a seed


def parquet_columns(schema: pa.Schema) -> list[str]:
    """The column paths Parquet stores, which per-column options name: a list's values are `<name>.list.element`."""
    return [f"{field.name}.list.element" if pa.types.is_list(field.type) else field.name for field in schema]


def plan_slakh_like(name: str, r: MultitrackRecipe, sources: Path) -> BuildPlan:
    """`sources` caches the music21 scores derived as MIDI."""
    presets = soundfont_presets(r.soundfonts)
    classes, hierarchy = load_classes(r.classes), load_hierarchy(r.hierarchy)
    n_corpus = round(r.pieces * r.music21_fraction)

    pieces = []  # (name, source, midi, soundfonts)
    for k, (path, score) in enumerate(corpus_pieces(n_corpus, r.seed, sources)):
        rng = piece_rng(r.seed, "music21", k)
        midi = tidy(score, r.max_seconds, time_scale=60.0 / rng.uniform(60, 110))
        for part in midi.instruments:  # the corpus has no dynamics: a level per part, a little variation per note
            level = rng.uniform(70, 105)
            for note in part.notes:
                note.velocity = int(np.clip(round(level + rng.normal(0, 6)), 1, 127))
        pieces.append((f"music21/{path}", "music21", *_instrumented(midi, rng, presets)))
    for k in range(r.pieces - n_corpus):
        rng = piece_rng(r.seed, "arranger", k)
        n_parts = int(rng.integers(r.min_parts, r.max_parts + 1))
        midi = tidy(arrange(int(rng.integers(2**31)), n_parts, r.min_seconds, r.max_seconds), r.max_seconds)
        band = piece_rng(r.seed, "band", k).random() < r.band_fraction  # its own stream: band_fraction 0 keeps the rest
        pieces.append((f"arranger/{r.seed}-{k:05d}", "arranger", *_instrumented(midi, rng, presets, band=band)))
    for k, path in enumerate(_expand(r.midi_files)):
        midi = tidy(load_midi(path), r.max_seconds)
        if not midi.instruments:
            raise PartitaError(f"MIDI file {str(path)!r} has no notes", "remove it from midi_files")
        pieces.append((f"midi/{path}", "midi", *_instrumented(midi, piece_rng(r.seed, "midi", k), presets, keep_programs=True)))

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
        name=name,
        kind="multitrack",
        recipe={
            "dataset": name,
            "multitrack": r.model_dump(mode="json"),
            "soundfont_sha256": {name: checksum(path) for name, path in fonts.items()},
            "taxonomy_sha256": {"classes": classes.sha256, "hierarchy": hierarchy.sha256},
            "pieces_sha256": digest.hexdigest(),
        },
        items=items,
        worker=MultitrackRenderer,
        worker_kwargs={"recipe": r.model_dump(mode="json")},
        batch_size=1,
        min_bytes_per_write=BYTES_PER_WRITE,
        # PCM barely compresses (zstd: 28 MB -> 20 MB a piece) and decompressing it was most of what the training
        # stream spent reading a piece (25 of 29 ms); stored plain, a piece reads memory-mapped without a copy
        compression={column: "none" if column == "stems" else "zstd" for column in parquet_columns(row_schema())},
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


BYTES_PER_WRITE = 256 << 20  # 5-10 rendered pieces per Parquet file


def soundfont_presets(names) -> dict[str, set[tuple[int, int]]]:
    """soundfont -> its (bank, program) presets among GM programs and the GM kits; loads each once."""
    presets = {}
    for name in names:
        synth = Synthesizer(SynthConfig(soundfont=name))
        presets[name] = {(0, p) for p in range(128) if synth.has_preset(p)} | {(128, k) for k in DRUM_KITS if synth.has_preset(k, 128)}
        synth.close()
    return presets


def piece_rng(seed: int, stream: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, STREAMS.index(stream), index])


def _instrumented(midi: pretty_midi.PrettyMIDI, rng: np.random.Generator, presets: dict, keep_programs: bool = False, band: bool = False) -> tuple:
    """The piece with a program per part, and each part's soundfont; `band`: the roles of BAND_PROGRAMS play those."""
    fonts = []
    for part, role in zip(midi.instruments, roles(midi)):
        if keep_programs and not part.is_drum:
            program = part.program
        elif band and role in BAND_PROGRAMS:
            program = int(rng.choice(BAND_PROGRAMS[role]))
        else:
            program = None
        choice = assign(role, rng, presets, program=program)
        part.program, part.is_drum = choice.program, choice.is_drum
        fonts.append(choice.soundfont)
    return midi, fonts


def _split(sources: list[str], valid_fraction: float, test_fraction: float, seed: int) -> list[str]:
    """A split per piece: sources interleaved after shuffling, so every split mixes them."""
    rng = piece_rng(seed, "splits", 0)
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
