"""The build plan of a chord data set: every chord of every split, and every distinct note alone."""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow as pa

from components.data.build_plan import BuildPlan
from components.data.chords.recipe import (
    CHORD_DATASETS,
    JSB_SHA256,
    JSB_URL,
    MAX_NOTES,
    NOTES_SPLIT,
    SPLITS,
    ChordRecipe,
    chord_splits,
    jsb_chords_from_json,
    jsb_json_from_music21,
)
from components.data.chords.render import ChordFeaturizer
from components.data.manifest import sha256_bytes, sha256_file
from components.data.soundfonts import checksum, resolve
from components.errors import PartitaError


def plan_chords(name: str, recipe: ChordRecipe, jsb_json: str | None, sources: Path) -> BuildPlan:
    """`jsb_json`: the czhuang file, if given; `sources` caches downloaded or derived source files."""
    spec = CHORD_DATASETS[name]
    soundfont = resolve(recipe.synth.soundfont)
    jsb_table, provenance = (None, {})
    if spec.source == "jsb":
        jsb_path = jsb_source_file(recipe, jsb_json, sources)
        jsb_table = jsb_chords_from_json(jsb_path)
        provenance = {"jsb_source": recipe.jsb_source, "jsb_sha256": sha256_file(jsb_path)}
    splits = chord_splits(name, recipe, jsb_table, provenance)
    notes = splits.notes()

    blocks = []
    for split in (*SPLITS, NOTES_SPLIT):
        if split == NOTES_SPLIT:
            pitches = np.full((len(notes), MAX_NOTES), -1, np.int16)
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
                        "pitches": pa.FixedSizeListArray.from_arrays(pa.array(pitches[rows].ravel()), MAX_NOTES),
                        "programs": pa.FixedSizeListArray.from_arrays(pa.array(programs[rows].ravel()), MAX_NOTES),
                        "split": pa.array([split] * n),
                    }
                )
            )
    features = recipe.features
    return BuildPlan(
        name=name,
        kind="chords",
        recipe={
            "dataset": name,
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
            "max_notes": MAX_NOTES,
        },
    )


# rows per work item block: a few seconds of featurising, ~30 MB of output
_BLOCK_ROWS = 2048


def jsb_source_file(recipe: ChordRecipe, jsb_json: str | None, sources: Path) -> Path:
    """The JSB chorale file to use: --jsb-json, else a cached download or music21 derivation."""
    if jsb_json:
        if recipe.jsb_source != "czhuang":
            raise PartitaError("--jsb-json was given with jsb_source music21", "use one or the other")
        return Path(jsb_json).expanduser()
    if recipe.jsb_source == "music21":
        cached = sources / "jsb-music21.json"
        if not cached.is_file():
            print("deriving JSB chords from music21's bundled chorales (about a minute, once)...", flush=True)
            _write_atomic(cached, json.dumps(jsb_json_from_music21()).encode())
        return cached
    cached = sources / "jsb-chorales-quarter.json"
    url = os.environ.get("PARTITA_JSB_URL", JSB_URL)  # a mirror; the checksum below still applies
    if not cached.is_file():
        try:
            with urllib.request.urlopen(url, timeout=15) as response:
                data = response.read()
        except OSError as err:
            raise PartitaError(
                f"could not download the JSB chorales from {url} ({err})",
                "pass --jsb-json PATH to a local jsb-chorales-quarter.json, or use the offline "
                "fallback --jsb-source music21 (a different chord set)",
            ) from None
        if sha256_bytes(data) != JSB_SHA256:
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
