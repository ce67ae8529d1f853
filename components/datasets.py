"""Data set names, their configs, and build plans.

A `BuildPlan` says what to compute without saying how to distribute it: the
work items (one row each, with a `split` column), the worker class that turns
a batch of items into output rows, and the recipe that identifies the result.
orchestration.data_build runs plans on Ray Data.
"""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
from pydantic import Field, field_validator

from components import chords
from components.chords import ChordRecipe
from components.chord_features import ChordFeaturizer
from components.errors import PartitaError
from components.manifest import recipe_hash, sha256_bytes, sha256_file
from components.multitrack.recipes import MultitrackRecipe, PianoDomainsRecipe
from components.schema import StrictModel
from components.soundfonts import checksum, resolve

NOTES_SPLIT = "notes"  # chord data sets: one row per distinct (pitch, program), its spectrogram alone

SLAKH_LIKE, PIANO_DOMAINS = "slakh-like", "piano-domains"
KNOWN_DATASETS = (*chords.CHORD_DATASETS, SLAKH_LIKE, PIANO_DOMAINS)


class DataConfig(StrictModel):
    name: str = Field(description="data set name: " + ", ".join(KNOWN_DATASETS))
    root: str | None = Field(None, description="folder of built data sets (default $PARTITA_HOME/data)")
    jsb_json: str | None = Field(None, description="path of czhuang's jsb-chorales-quarter.json")
    chords: ChordRecipe = ChordRecipe()
    multitrack: MultitrackRecipe = MultitrackRecipe()
    pianos: PianoDomainsRecipe = PianoDomainsRecipe()

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in KNOWN_DATASETS:
            raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(KNOWN_DATASETS)}")
        return name


@dataclass
class BuildPlan:
    name: str
    kind: str
    recipe: dict  # everything that decides the content, source fingerprints included
    items: list[pa.Table]  # work items in blocks, each with a "split" column
    worker: type
    worker_kwargs: dict
    batch_size: int
    info: dict = field(default_factory=dict)  # extra manifest fields
    # output blocks combined per Parquet write (bytes in memory); None: one write per block.
    # Few large writes matter when the actors hold every CPU: each write task then needs a
    # freshly started worker process (about 2 s of CPU) once Ray has reaped the idle ones.
    min_bytes_per_write: int | None = None

    @property
    def recipe_hash(self) -> str:
        return recipe_hash(self.recipe)

    @property
    def counts(self) -> dict[str, int]:
        splits = pa.concat_tables(self.items).column("split").to_numpy(zero_copy_only=False)
        names, counts = np.unique(splits, return_counts=True)
        return {str(n): int(c) for n, c in zip(names, counts)}


def plan(config: DataConfig, sources: Path) -> BuildPlan:
    """The build plan of a data set; `sources` caches downloaded or derived source files."""
    if config.name in (SLAKH_LIKE, PIANO_DOMAINS):
        from components.multitrack import plans  # music21 and pretty_midi load only for these sets

        return plans.plan_slakh_like(config, sources) if config.name == SLAKH_LIKE else plans.plan_piano_domains(config, sources)
    recipe = config.chords
    spec = chords.CHORD_DATASETS[config.name]
    soundfont = resolve(recipe.synth.soundfont)
    jsb_table, provenance = (None, {})
    if spec.source == "jsb":
        jsb_path = jsb_source_file(config, sources)
        jsb_table = chords.jsb_chords_from_json(jsb_path)
        provenance = {"jsb_source": recipe.jsb_source, "jsb_sha256": sha256_file(jsb_path)}
    splits = chords.chord_splits(config.name, recipe, jsb_table, provenance)
    notes = splits.notes()

    blocks = []
    for split in (*chords.SPLITS, NOTES_SPLIT):
        if split == NOTES_SPLIT:
            pitches = np.full((len(notes), chords.MAX_NOTES), -1, np.int16)
            programs = pitches.copy()
            pitches[:, 0], programs[:, 0] = notes[:, 0], notes[:, 1]
        else:
            pitches, programs = splits.pitches[split], splits.programs[split]
        for start in range(0, len(pitches), _BLOCK_ROWS):
            rows = slice(start, start + _BLOCK_ROWS)
            n = len(pitches[rows])
            blocks.append(
                pa.table(
                    {
                        "example_id": pa.array(np.arange(start, start + n, dtype=np.int64)),
                        "pitches": pa.FixedSizeListArray.from_arrays(pa.array(pitches[rows].ravel()), chords.MAX_NOTES),
                        "programs": pa.FixedSizeListArray.from_arrays(pa.array(programs[rows].ravel()), chords.MAX_NOTES),
                        "split": pa.array([split] * n),
                    }
                )
            )
    features = recipe.features
    return BuildPlan(
        name=config.name,
        kind="chords",
        recipe={
            "dataset": config.name,
            "chords": recipe.model_dump(mode="json"),
            "source": splits.source,
            "soundfont_sha256": checksum(soundfont),
        },
        items=blocks,
        worker=ChordFeaturizer,
        worker_kwargs={"recipe": recipe.model_dump(mode="json"), "notes": notes.tolist()},
        batch_size=1024,
        info={
            "soundfonts": {soundfont.stem: {"path": str(soundfont), "sha256": checksum(soundfont)}},
            "shapes": {"chord_db": [features.n_mels, features.frames]},
            "vocab": {
                "pitches": sorted({int(p) for p in notes[:, 0]}),
                "programs": sorted({int(g) for g in notes[:, 1]}),
            },
            "max_notes": chords.MAX_NOTES,
        },
    )


# rows per work item block: a few seconds of featurising, ~30 MB of output
_BLOCK_ROWS = 2048


def jsb_source_file(config: DataConfig, sources: Path) -> Path:
    """The JSB chorale file to use: --jsb-json, else a cached download or music21 derivation."""
    if config.jsb_json:
        if config.chords.jsb_source != "czhuang":
            raise PartitaError("--jsb-json was given with jsb_source music21", "use one or the other")
        return Path(config.jsb_json).expanduser()
    if config.chords.jsb_source == "music21":
        cached = sources / "jsb-music21.json"
        if not cached.is_file():
            print("deriving JSB chords from music21's bundled chorales (about a minute, once)...", flush=True)
            _write_atomic(cached, json.dumps(chords.jsb_json_from_music21()).encode())
        return cached
    cached = sources / "jsb-chorales-quarter.json"
    if not cached.is_file():
        try:
            with urllib.request.urlopen(chords.JSB_URL, timeout=15) as response:
                data = response.read()
        except OSError as err:
            raise PartitaError(
                f"could not download the JSB chorales from {chords.JSB_URL} ({err})",
                "pass --jsb-json PATH to a local jsb-chorales-quarter.json, or use the offline "
                "fallback --jsb-source music21 (a different chord set)",
            ) from None
        if sha256_bytes(data) != chords.JSB_SHA256:
            raise PartitaError(
                f"the downloaded JSB file has an unexpected checksum {sha256_bytes(data)}",
                "pass --jsb-json PATH with the original czhuang file",
            )
        _write_atomic(cached, data)
    return cached


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".partial")
    tmp.write_bytes(data)
    tmp.rename(path)


def open_dataset(path: Path):
    """A built data set ready for training: `.spec` (DataSpec) and `.split(name)`.

    Each data kind has its reader; a split has `len()`, `batch(index)` and
    `batches(batch_size, limit)` yielding the dict-of-tensors batches its model
    families consume.
    """
    from components.chord_data import ChordData
    from components.manifest import read_manifest

    readers = {"chords": ChordData}
    kind = read_manifest(path).get("kind")
    if kind not in readers:
        raise PartitaError(f"{path} holds a {kind!r} data set, which no trainable reader handles yet", "train on a chord data set")
    return readers[kind](path)
