"""The four MusicSlots chord data sets: which chords, which instruments, which split.

JSB chords come from the czhuang `jsb-chorales-quarter.json` (or, offline, from
music21's bundled chorales, a different and clearly labelled set); JazzNet
chords are generated from the JazzNet formulas. Everything here is symbolic:
rendering and features live in `components.data.chords.render`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from components.data.features import FeatureConfig
from components.data.synthesis import SynthConfig
from components.errors import PartitaError
from components.schema import StrictModel

SPLITS = ("train", "valid", "test")
MAX_NOTES = 4
NOTES_SPLIT = "notes"  # one row per distinct (pitch, program), its spectrogram alone
# The czhuang file as the paper used it: where to fetch it, and its sha256 so a
# corrupted or different download is refused.
JSB_URL = "https://raw.githubusercontent.com/czhuang/JSB-Chorales-dataset/master/jsb-chorales-quarter.json"
JSB_SHA256 = "2db9329f1881a1d3f49703ec556bf1d6f84b4f6c1d702c156536e93cf31e1c91"


@dataclass(frozen=True)
class ChordSetSpec:
    source: Literal["jsb", "jazznet"]
    multi: bool


CHORD_DATASETS: dict[str, ChordSetSpec] = {
    "jsb-single": ChordSetSpec("jsb", multi=False),
    "jsb-multi": ChordSetSpec("jsb", multi=True),
    "jazznet-single": ChordSetSpec("jazznet", multi=False),
    "jazznet-multi": ChordSetSpec("jazznet", multi=True),
}


class ChordRecipe(StrictModel):
    """Everything that decides a chord data set's content (its manifest records all of it)."""

    jsb_source: Literal["czhuang", "music21"] = Field(
        "czhuang", description="czhuang: the paper's JSB file; music21: offline fallback, a different chord set"
    )
    split_seed: int = Field(0, description="seed of the chord shuffle before splitting")
    assignment_seed: int = Field(0, description="seed of jsb-multi's random instrument assignments")
    jsb_assignments: int = Field(9, gt=0, description="instrument assignments per chord in jsb-multi")
    single_program: int = Field(0, ge=0, le=127, description="GM program of the single-instrument sets")
    programs: tuple[int, ...] = Field((0, 40, 73), description="GM programs of the multi-instrument sets")
    limit_chords: int | None = Field(
        None, gt=0, description="keep only the first N chords of each split (quick demos and tests; not the paper's data)"
    )
    velocity: int = Field(127, ge=1, le=127, description="music21 volume 1.0")
    note_seconds: float = Field(0.71, gt=0, description="note duration (the paper; the authors' code uses 0.5)")
    lead_silence: int = Field(4000, ge=0, description="zero samples prepended at the synth rate")
    synth: SynthConfig = SynthConfig()
    features: FeatureConfig = FeatureConfig()

    @field_validator("programs")
    @classmethod
    def _programs_valid(cls, programs: tuple[int, ...]) -> tuple[int, ...]:
        if len(programs) < 2 or len(set(programs)) != len(programs) or not all(0 <= p <= 127 for p in programs):
            raise ValueError("needs at least two distinct GM programs in 0..127")
        return tuple(programs)


@dataclass
class ChordSplits:
    """Examples per split: pitches and programs padded to MAX_NOTES with -1."""

    pitches: dict[str, np.ndarray]  # split -> [n, MAX_NOTES] int16
    programs: dict[str, np.ndarray]  # split -> [n, MAX_NOTES] int16
    source: dict  # provenance of the chords, recorded in the manifest

    def counts(self) -> dict[str, int]:
        return {split: len(rows) for split, rows in self.pitches.items()}

    def notes(self) -> np.ndarray:
        """Distinct (pitch, program) pairs over all splits, sorted: [m, 2]."""
        pairs = [
            np.stack([self.pitches[s][self.pitches[s] >= 0], self.programs[s][self.pitches[s] >= 0]], axis=1)
            for s in self.pitches
        ]
        return np.unique(np.concatenate(pairs), axis=0)


# --- chord sources -----------------------------------------------------------------


def jsb_chords_from_json(path: Path) -> np.ndarray:
    """Unique JSB chords as the paper derives them: [n, 4] ascending rows, left-padded with 0.

    Every time step of every chorale in all three splits, left-padded with zeros
    to four voices; unique rows; rows with fewer than two notes dropped (3131 for
    the czhuang file).
    """
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise PartitaError(f"JSB file {str(path)!r} does not exist", "pass --jsb-json with the path of jsb-chorales-quarter.json") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PartitaError(f"JSB file {str(path)!r} is not readable JSON ({err})", "pass the czhuang jsb-chorales-quarter.json") from None
    if not isinstance(data, dict) or not set(SPLITS) <= set(data):
        raise PartitaError(
            f"JSB file {str(path)!r} has the wrong shape: expected an object with keys train, valid, test",
            "pass the czhuang jsb-chorales-quarter.json (split -> chorales -> time steps -> MIDI pitches)",
        )
    rows = []
    for split in SPLITS:
        chorales = data[split]
        if not isinstance(chorales, list):
            raise PartitaError(f"JSB file {str(path)!r}: {split!r} is not a list of chorales", "pass the czhuang file")
        for c, chorale in enumerate(chorales):
            if not isinstance(chorale, list):
                raise PartitaError(f"JSB file {str(path)!r}: {split}[{c}] is not a list of time steps", "pass the czhuang file")
            for t, step in enumerate(chorale):
                if (
                    not isinstance(step, list)
                    or len(step) > MAX_NOTES
                    or not all(isinstance(p, (int, float)) and float(p).is_integer() and 0 <= p <= 127 for p in step)
                ):
                    raise PartitaError(
                        f"JSB file {str(path)!r}: {split}[{c}][{t}] = {step!r} is not a list of at most 4 MIDI pitches",
                        "pass the czhuang jsb-chorales-quarter.json",
                    )
                pitches = sorted(int(p) for p in step if p > 0)
                rows.append([0] * (MAX_NOTES - len(pitches)) + pitches)
    if not rows:
        raise PartitaError(f"JSB file {str(path)!r} holds no time steps", "pass the czhuang jsb-chorales-quarter.json")
    unique = np.unique(np.asarray(rows, dtype=np.int16), axis=0)
    return unique[(unique > 0).sum(axis=1) >= 2]


def jsb_json_from_music21() -> dict:
    """The music21 corpus chorales in czhuang's format (all under "train").

    One time step per quarter note: the pitch each of the four parts sounds at
    that beat. Only chorales with exactly four parts are used.
    """
    from music21 import corpus

    chorales = []
    for score in corpus.chorales.Iterator(returnType="stream"):
        if len(score.parts) != 4:
            continue
        voices = []
        for part in score.parts:
            notes = part.stripTies().flatten().notes
            voices.append([(float(n.offset), float(n.offset + n.quarterLength), n.pitch.midi) for n in notes if n.isNote])
        length = int(math.ceil(float(score.highestTime)))
        steps = []
        for beat in range(length):
            step = [midi for voice in voices for start, end, midi in voice if start <= beat < end]
            steps.append(sorted(step))
        chorales.append(steps)
    return {"train": chorales, "valid": [], "test": []}


def jazznet_chords() -> dict[int, np.ndarray]:
    """JazzNet chords with every pitch in [36, 96], deduplicated: notes -> [n, notes] rows.

    Roots MIDI 24..108; an inversion moves the lowest k tones up an octave.
    Gives 654 dyads, 689 triads and 884 tetrads.
    """
    dyads = [[i] for i in range(1, 12)]
    triads = [[4, 3], [3, 4], [4, 4], [3, 3], [2, 5], [5, 2]]
    tetrads = [[4, 3, 4], [3, 4, 3], [4, 3, 3], [3, 3, 4], [3, 3, 3], [4, 3, 2]]
    shapes = [(d, 2) for d in dyads] + [([12], 1)] + [(t, 3) for t in triads] + [(t, 4) for t in tetrads]
    found: dict[int, set[tuple[int, ...]]] = {2: set(), 3: set(), 4: set()}
    for root in range(24, 109):
        for intervals, inversions in shapes:
            base = list(np.cumsum([root, *intervals]))
            for k in range(inversions):
                pitches = sorted([p + 12 for p in base[:k]] + base[k:])
                if 36 <= pitches[0] and pitches[-1] <= 96:
                    found[len(pitches)].add(tuple(int(p) for p in pitches))
    return {n: np.asarray(sorted(chords), dtype=np.int16) for n, chords in found.items()}


# --- splits and instrument assignments --------------------------------------------

# The paper's JazzNet split composition (its Table 4): train/validation hold
# dyads and triads in these numbers, test all tetrads. Splitting each chord size
# separately with these sizes reproduces the paper's 19458/5031 multi counts.
JAZZNET_TRAIN_VALID = {2: (530, 124), 3: (544, 145)}


def _pad(chords: list[np.ndarray]) -> np.ndarray:
    out = np.full((len(chords), MAX_NOTES), -1, dtype=np.int16)
    for i, chord in enumerate(chords):
        out[i, : len(chord)] = chord
    return out


def chord_splits(name: str, recipe: ChordRecipe, jsb_table: np.ndarray | None = None, jsb_provenance: dict | None = None) -> ChordSplits:
    """Examples of a chord data set by split. JSB sets need `jsb_table` (jsb_chords_from_json)."""
    if name not in CHORD_DATASETS:
        raise PartitaError(f"unknown chord data set {name!r}", f"use one of {', '.join(CHORD_DATASETS)}")
    spec = CHORD_DATASETS[name]
    rng = np.random.default_rng(recipe.split_seed)
    chords: dict[str, list[np.ndarray]]
    if spec.source == "jsb":
        if jsb_table is None:
            raise ValueError("JSB data sets need the JSB chord table")
        rows = [row[row > 0] for row in jsb_table[rng.permutation(len(jsb_table))]]
        n_train, n_valid = int(0.7 * len(rows)), int(0.2 * len(rows))
        chords = {"train": rows[:n_train], "valid": rows[n_train : n_train + n_valid], "test": rows[n_train + n_valid :]}
        source = {"chords": "jsb", **(jsb_provenance or {})}
    else:
        by_size = jazznet_chords()
        chords = {"train": [], "valid": [], "test": list(by_size[4])}
        for size, (n_train, n_valid) in JAZZNET_TRAIN_VALID.items():
            shuffled = list(by_size[size][rng.permutation(len(by_size[size]))])
            chords["train"] += shuffled[:n_train]
            chords["valid"] += shuffled[n_train : n_train + n_valid]
        source = {"chords": "jazznet-formulas"}

    if recipe.limit_chords is not None:
        chords = {split: rows[: recipe.limit_chords] for split, rows in chords.items()}
    pitches, programs = {}, {}
    assign_rng = np.random.default_rng(recipe.assignment_seed)
    for split in SPLITS:
        split_pitches, split_programs = [], []
        for chord in chords[split]:
            for assignment in _assignments(len(chord), spec, recipe, assign_rng):
                split_pitches.append(chord)
                split_programs.append(np.asarray(assignment, dtype=np.int16))
        pitches[split], programs[split] = _pad(split_pitches), _pad(split_programs)
    return ChordSplits(pitches, programs, source)


def _assignments(n_notes: int, spec: ChordSetSpec, recipe: ChordRecipe, rng: np.random.Generator) -> list[tuple[int, ...]]:
    """Programs per note: one for single sets; all n^k (JazzNet) or k distinct random (JSB) for multi."""
    if not spec.multi:
        return [(recipe.single_program,) * n_notes]
    n_programs = len(recipe.programs)
    total = n_programs**n_notes
    if spec.source == "jazznet":
        codes = np.arange(total)
    else:
        codes = np.sort(rng.choice(total, size=min(recipe.jsb_assignments, total), replace=False))
    digits = (codes[:, None] // n_programs ** np.arange(n_notes)[None, ::-1]) % n_programs
    return [tuple(recipe.programs[d] for d in row) for row in digits]


