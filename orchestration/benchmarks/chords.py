"""Chord data benchmarks: synthesis against the authors' pipeline, Ray Data scaling, full builds.

`synth` times the same chords in turns: partita's path (each distinct note
rendered once in-process, STFTs summed, mel) against the authors' per-note
path (a MIDI file per note rendered by the fluidsynth command line, loaded,
resampled, summed, mel), both including every render; and partita's chords
from its rendered notes against the authors' cached path (per chord: load the
renders the command line saved once, sum, mel, save) against partita's
(the build's own step: mel of the summed note STFTs, digests, one Parquet
file), neither counting the renders. `datasets` builds all four data sets from scratch.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import soundfile
import torch
import torchaudio

from components.data.catalog import DataConfig
from components.data.chords.recipe import CHORD_DATASETS, ChordRecipe, chord_splits
from components.data.chords.render import ChordFeaturizer
from components.data.features import LogMel
from components.data.soundfonts import resolve
from orchestration.benchmarks import Figure, interleave, register
from orchestration.benchmarks.monitor import TreeMonitor
from orchestration.data_build import build
from orchestration.runtime import init_ray

RECIPE = ChordRecipe()


def benchmark_chords(count: int) -> tuple[np.ndarray, np.ndarray]:
    """The first `count` JazzNet-multi test chords: four notes each, three instruments (no download needed)."""
    splits = chord_splits("jazznet-multi", RECIPE)
    pick = np.random.default_rng(0).choice(len(splits.pitches["test"]), count, replace=False)
    return splits.pitches["test"][pick], splits.programs["test"][pick]


def rendered_notes(pitches: np.ndarray, programs: np.ndarray) -> ChordFeaturizer:
    """partita's featurizer holding every distinct note of the chords, rendered."""
    notes = np.unique(np.stack([pitches[pitches >= 0], programs[pitches >= 0]], 1), axis=0)
    return ChordFeaturizer(RECIPE.model_dump(mode="json"), notes.tolist())


class AuthorsPipeline:
    """The MusicSlots authors' way: one MIDI file and one fluidsynth process per note."""

    def __init__(self, workdir: Path):
        import pretty_midi

        self.pretty_midi = pretty_midi
        self.workdir = workdir
        self.soundfont = str(resolve(RECIPE.synth.soundfont))
        self.logmel = LogMel(RECIPE.features)
        self.cache = workdir / "cache"

    def render(self, pitch: int, program: int) -> torch.Tensor:
        midi = self.pretty_midi.PrettyMIDI()
        instrument = self.pretty_midi.Instrument(program=int(program))
        instrument.notes.append(self.pretty_midi.Note(velocity=RECIPE.velocity, pitch=int(pitch), start=0.0, end=RECIPE.note_seconds))
        midi.instruments.append(instrument)
        stem = self.workdir / f"note-{pitch}-{program}"
        midi.write(f"{stem}.mid")
        subprocess.run(
            ["fluidsynth", "-ni", "-g", str(RECIPE.synth.gain), "-r", str(RECIPE.synth.sample_rate), "-F", f"{stem}.wav", self.soundfont, f"{stem}.mid"],
            check=True,
            capture_output=True,
        )
        audio, _ = soundfile.read(f"{stem}.wav", dtype="float32", always_2d=True)
        audio = np.concatenate([np.zeros(RECIPE.lead_silence, np.float32), audio[:, 0]])
        return torchaudio.functional.resample(torch.from_numpy(audio), RECIPE.synth.sample_rate, RECIPE.features.sample_rate)

    def chord_db(self, waves: list[torch.Tensor]) -> torch.Tensor:
        length = RECIPE.features.samples
        mix = sum(torch.nn.functional.pad(w, (0, max(0, length - len(w))))[:length] for w in waves)
        return self.logmel(mix[None])[0]

    def per_note(self, pitches: np.ndarray, programs: np.ndarray) -> None:
        for chord, instruments in zip(pitches, programs):
            self.chord_db([self.render(p, g) for p, g in zip(chord, instruments) if p >= 0])

    def fill_cache(self, pitches: np.ndarray, programs: np.ndarray) -> None:
        self.cache.mkdir(exist_ok=True)
        for p, g in {(int(p), int(g)) for chord, inst in zip(pitches, programs) for p, g in zip(chord, inst) if p >= 0}:
            np.save(self.cache / f"{p}-{g}.npy", self.render(p, g).numpy())

    def cached(self, pitches: np.ndarray, programs: np.ndarray) -> None:
        out = self.workdir / "out"
        out.mkdir(exist_ok=True)
        for i, (chord, instruments) in enumerate(zip(pitches, programs)):
            waves = [torch.from_numpy(np.load(self.cache / f"{p}-{g}.npy")) for p, g in zip(chord, instruments) if p >= 0]
            np.save(out / f"{i}.npy", self.chord_db(waves).numpy())


@register("synth")
def synth(quick: bool) -> list[Figure]:
    if shutil.which("fluidsynth") is None:
        return [Figure("synth", "skipped", 0, "", note="the fluidsynth command line is not installed (Debian package fluidsynth)")]
    count, repeats = (50, 1) if quick else (200, 3)
    pitches, programs = benchmark_chords(count)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        authors = AuthorsPipeline(Path(folder))
        fill_start = time.perf_counter()
        authors.fill_cache(pitches, programs)
        fill = time.perf_counter() - fill_start
        featurizer = rendered_notes(pitches, programs)
        batch = {"example_id": np.arange(count), "pitches": pitches, "programs": programs}
        ours, per_note, ours_from_notes, cached = interleave(
            [
                lambda: rendered_notes(pitches, programs).spectrograms(pitches, programs),
                lambda: authors.per_note(pitches, programs),
                lambda: pq.write_table(featurizer(batch), Path(folder) / "chords.parquet"),
                lambda: authors.cached(pitches, programs),
            ],
            repeats,
        )
    per = lambda seconds: seconds / count * 1000  # noqa: E731
    note = f"{count} four-note JazzNet chords, 1 thread, median of {repeats}"
    cached_note = f"{note}; renders not counted (the authors' cache fill took {fill:.1f} s)"
    figures = [
        Figure("synth", "partita ms per chord, renders included", round(per(ours), 3), "ms", note=note),
        Figure("synth", "authors' per-note path ms per chord", round(per(per_note), 2), "ms", note=note),
        Figure("synth", "speed-up over the per-note path", round(per_note / ours, 1), "x", ">= 50", note),
        Figure("synth", "partita ms per chord from rendered notes", round(per(ours_from_notes), 3), "ms", note=cached_note),
        Figure("synth", "authors' cached path ms per chord", round(per(cached), 3), "ms", note=cached_note),
        Figure("synth", "speed-up over the cached path", round(cached / ours_from_notes, 1), "x", ">= 10", cached_note),
    ]
    return figures + _scaling(quick)


def _scaling(quick: bool) -> list[Figure]:
    """Ray Data build rate with 1 and 2 actors, in turns, on the same chord set."""
    init_ray()
    chords = 60 if quick else 250  # JazzNet-multi chords per split: ~12k (quick) / ~46k rows
    with tempfile.TemporaryDirectory() as folder:
        config = DataConfig(name="jazznet-multi", root=folder, chords={"limit_chords": chords})
        one, two = interleave([lambda: build(config, force=True, workers=1), lambda: build(config, force=True, workers=2)], 1 if quick else 2)
        rows = sum(entry["rows"] for entry in json.loads((Path(folder) / "jazznet-multi" / "manifest.json").read_text())["splits"].values())
    return [
        Figure("synth", "Ray Data build rows/s, 1 worker", round(rows / one), "rows/s", note=f"{rows} rows, whole build incl. actor start-up"),
        Figure("synth", "Ray Data build rows/s, 2 workers", round(rows / two), "rows/s", note=f"{rows} rows"),
        Figure("synth", "Ray Data speed-up 1 -> 2 workers", round(one / two, 2), "x", ">= 1.5", note="2 cores"),
    ]


@register("datasets")
def datasets(quick: bool) -> list[Figure]:
    """All four chord data sets built from scratch: time, disk and peak memory."""
    init_ray()
    names = ["jsb-single", "jazznet-single"] if quick else list(CHORD_DATASETS)
    jsb_json = os.environ.get("PARTITA_JSB_JSON")
    source = {"jsb_json": jsb_json} if jsb_json else {"chords": {"jsb_source": "music21"}}
    with tempfile.TemporaryDirectory() as folder:
        # the JSB source is prepared outside the timing (a music21 derivation takes a minute, once)
        for name in names:
            if name.startswith("jsb"):
                from components.data.chords.plan import jsb_source_file

                config = DataConfig(name=name, root=folder, **source)
                jsb_source_file(config.chords, config.jsb_json, Path(folder) / "sources")
                break
        start = time.perf_counter()
        with TreeMonitor() as peak:
            built = [build(DataConfig(name=name, root=folder, **source), force=True) for name in names]
        seconds = time.perf_counter() - start
        rows = sum(sum(e["rows"] for e in json.loads((p / "manifest.json").read_text())["splits"].values()) for p in built)
        disk = sum(f.stat().st_size for p in built for f in p.rglob("*") if f.is_file()) / 1e9
    note = f"{', '.join(names)}: {rows} rows; JSB from {'the czhuang file' if jsb_json else 'music21 (set PARTITA_JSB_JSON for the paper set)'}"
    return [
        Figure("datasets", "build time, all sets", round(seconds / 60, 2), "min", "<= 5" if not quick else None, note),
        Figure("datasets", "disk", round(disk, 2), "GB", "<= 3" if not quick else None, note),
        Figure("datasets", "peak memory (driver + Ray)", round(peak.peak_mb / 1024, 2), "GB", "<= 6" if not quick else None, note),
    ]
