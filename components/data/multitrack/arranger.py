"""A seeded procedural arranger: chord progressions voiced into parts with band roles.

`arrange(seed, n_parts, ...)` writes a pretty_midi piece whose instruments are
named by role: bass, comping, melody and drums always, then pad and counter
(a second, higher accompaniment line) up to `n_parts`. Programs are left at 0:
components.data.multitrack.instruments assigns them by role. Everything random comes
from the seed, so a piece is reproducible from (seed, arguments) alone.

The piece: a key and mode, a tempo, a metre (4/4 or 3/4), two 4-chord
progressions (sections A and B) in a form such as A A B A B, and a density that
sets note rates. Repeated sections replay the same melody, as songs do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pretty_midi

ROLES = ("bass", "comping", "melody", "drums", "pad", "counter")

SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
PROGRESSIONS = {  # scale degrees, 1-based
    "major": [(1, 5, 6, 4), (1, 6, 4, 5), (2, 5, 1, 6), (1, 4, 5, 4), (6, 4, 1, 5), (1, 4, 6, 5), (4, 1, 5, 6), (1, 3, 4, 5)],
    "minor": [(1, 6, 3, 7), (1, 4, 5, 1), (1, 7, 6, 7), (1, 6, 7, 1), (4, 5, 1, 1), (1, 4, 7, 3), (6, 7, 1, 1)],
}
# drum patterns: (GM key, sixteenth steps in a bar, velocity); 4/4 bars have 16 steps, 3/4 bars 12
KICK, SNARE, CLOSED_HAT, OPEN_HAT, CRASH, RIDE, TOMS = 36, 38, 42, 46, 49, 51, (50, 47, 45)
GROOVES = {
    4: {
        "rock": [(KICK, (0, 8), 110), (SNARE, (4, 12), 105)],
        "funk": [(KICK, (0, 3, 6, 10), 105), (SNARE, (4, 12), 105), (SNARE, (7, 9, 15), 45)],
        "half-time": [(KICK, (0, 10), 110), (SNARE, (8,), 110)],
        "disco": [(KICK, (0, 4, 8, 12), 105), (SNARE, (4, 12), 100), (OPEN_HAT, (2, 6, 10, 14), 80)],
    },
    3: {"waltz": [(KICK, (0,), 105), (SNARE, (4, 8), 85)]},
}
DRUM_SECONDS = 0.1


@dataclass(frozen=True)
class Chord:
    start: float  # seconds
    end: float
    pitch_classes: tuple[int, ...]  # root first


@dataclass(frozen=True)
class Style:
    tonic: int
    mode: str
    bpm: float
    beats_per_bar: int
    density: float  # 0.3 (sparse) .. 1 (busy)

    @property
    def beat(self) -> float:
        return 60.0 / self.bpm

    @property
    def bar(self) -> float:
        return self.beats_per_bar * self.beat

    def scale_pitches(self, low: int, high: int) -> np.ndarray:
        scale = {(self.tonic + step) % 12 for step in SCALES[self.mode]}
        return np.array([p for p in range(low, high + 1) if p % 12 in scale])


def arrange(seed: int, n_parts: int, min_seconds: float, max_seconds: float) -> pretty_midi.PrettyMIDI:
    rng = np.random.default_rng(seed)
    style = Style(
        tonic=int(rng.integers(12)),
        mode=str(rng.choice(["major", "minor"], p=[0.6, 0.4])),
        bpm=float(rng.uniform(72, 150)),
        beats_per_bar=3 if rng.random() < 0.2 else 4,
        density=float(rng.uniform(0.3, 1.0)),
    )
    bars_per_chord = 1 if style.bar < 1.6 and rng.random() < 0.5 else 2
    section_seconds = 4 * bars_per_chord * style.bar
    n_sections = max(2, int(rng.uniform(min_seconds, max_seconds) // section_seconds))
    form = ["A"] + [str(rng.choice(["A", "B"], p=[0.4, 0.6])) for _ in range(n_sections - 1)]
    progressions = {label: PROGRESSIONS[style.mode][i] for label, i in zip("AB", rng.choice(len(PROGRESSIONS[style.mode]), 2, replace=False))}
    sevenths = rng.random() < 0.3
    sections = []  # (label, start seconds, chords)
    for index, label in enumerate(form):
        start = index * section_seconds
        span = bars_per_chord * style.bar
        chords = [
            Chord(start + k * span, start + (k + 1) * span, _chord(style, degree, sevenths))
            for k, degree in enumerate(progressions[label])
        ]
        sections.append((label, start, chords))
    chords = [chord for _, _, section in sections for chord in section]

    midi = pretty_midi.PrettyMIDI(initial_tempo=style.bpm)
    midi.time_signature_changes.append(pretty_midi.TimeSignature(style.beats_per_bar, 4, 0.0))
    midi.key_signature_changes.append(pretty_midi.KeySignature(style.tonic + (12 if style.mode == "minor" else 0), 0.0))
    writers = {"bass": _bass, "comping": _comping, "melody": _melody, "drums": _drums, "pad": _pad, "counter": _counter}
    for role in ROLES[:n_parts]:
        part = pretty_midi.Instrument(program=0, is_drum=role == "drums", name=role)
        if role in ("melody", "drums"):
            part.notes = writers[role](style, sections, rng)
        else:
            part.notes = writers[role](style, chords, rng)
        _humanise(part, rng, jitter=0.0 if role == "drums" else 0.008)
        midi.instruments.append(part)
    return midi


def _chord(style: Style, degree: int, seventh: bool) -> tuple[int, ...]:
    steps = SCALES[style.mode]
    tones = [(style.tonic + steps[(degree - 1 + 2 * k) % 7]) % 12 for k in range(4 if seventh else 3)]
    if style.mode == "minor" and degree == 5:  # harmonic minor: a major dominant
        tones[1] = (tones[1] + 1) % 12
    return tuple(tones)


def _note(velocity: float, pitch: int, start: float, end: float) -> pretty_midi.Note:
    return pretty_midi.Note(velocity=int(np.clip(round(velocity), 1, 127)), pitch=int(pitch), start=float(start), end=float(end))


def _nearest(pitch_class: int, around: float) -> int:
    base = int(around) - (int(around) - pitch_class) % 12
    return base if around - base <= base + 12 - around else base + 12


def _bass(style: Style, chords: list[Chord], rng: np.random.Generator) -> list[pretty_midi.Note]:
    pattern = str(rng.choice(["whole", "root-fifth", "eighths", "walking", "syncopated"]))
    beat, notes = style.beat, []
    velocity = rng.uniform(90, 110)
    for index, chord in enumerate(chords):
        root = _nearest(chord.pitch_classes[0], 40)
        fifth = root + 7
        following = chords[(index + 1) % len(chords)].pitch_classes[0]
        beats = int(round((chord.end - chord.start) / beat))
        if pattern == "whole":
            hits = [(0, beats - 0.1, root)]
        elif pattern == "root-fifth":
            hits = [(b, 0.9, root if (b // 2) % 2 == 0 else fifth) for b in range(0, beats, 2)]
        elif pattern == "eighths":
            hits = [(h / 2, 0.45, root + (12 if h % 8 == 7 else 0)) for h in range(2 * beats)]
        elif pattern == "walking":
            target = _nearest(following, root)
            line = list(np.linspace(root, target, beats, endpoint=False).round().astype(int))
            hits = [(b, 0.9, pitch) for b, pitch in enumerate(line)]
        else:
            hits = [(b + offset, 0.4, root) for b in range(0, beats, 2) for offset in (0, 1.5)]
        for at, length, pitch in hits:
            notes.append(_note(velocity + rng.normal(0, 5), pitch, chord.start + at * beat, chord.start + (at + length) * beat))
    return notes


def _voicing(chord: Chord, previous: list[int] | None, low: int = 52, high: int = 74) -> list[int]:
    """Chord tones in [low, high], the inversion closest to the previous voicing."""
    options = []
    for rotation in range(len(chord.pitch_classes)):
        classes = chord.pitch_classes[rotation:] + chord.pitch_classes[:rotation]
        pitches, floor = [], low
        for pitch_class in classes:
            pitch = floor + (pitch_class - floor) % 12
            pitches.append(pitch)
            floor = pitch + 1
        if pitches[-1] <= high:
            options.append(pitches)
    if previous is None:
        return options[0]
    return min(options, key=lambda pitches: abs(np.mean(pitches) - np.mean(previous)))


def _comping(style: Style, chords: list[Chord], rng: np.random.Generator) -> list[pretty_midi.Note]:
    pattern = str(rng.choice(["block", "halves", "pulse", "offbeat", "arpeggio", "strum"]))
    beat, notes, previous = style.beat, [], None
    velocity = rng.uniform(60, 90)
    for chord in chords:
        voicing = _voicing(chord, previous)
        previous = voicing
        beats = int(round((chord.end - chord.start) / beat))
        if pattern == "arpeggio":
            step = 0.5 if style.density > 0.5 else 1.0
            for k in range(int(beats / step)):
                start = chord.start + k * step * beat
                notes.append(_note(velocity + rng.normal(0, 6), voicing[k % len(voicing)], start, start + step * beat * 0.95))
            continue
        hits = {
            "block": [(0.0, beats - 0.1)],
            "halves": [(float(b), 1.9) for b in range(0, beats, 2)],
            "pulse": [(float(b), 0.8) for b in range(beats)],
            "offbeat": [(b + 0.5, 0.4) for b in range(beats)],
            "strum": [(float(b), 0.95) for b in range(beats)],
        }[pattern]
        for at, length in hits:
            start = chord.start + at * beat
            for k, pitch in enumerate(voicing):
                spread = 0.012 * k if pattern == "strum" else 0.0
                notes.append(_note(velocity + rng.normal(0, 6), pitch, start + spread, start + length * beat))
    return notes


def _pad(style: Style, chords: list[Chord], rng: np.random.Generator) -> list[pretty_midi.Note]:
    velocity, notes, previous = rng.uniform(50, 70), [], None
    for chord in chords:
        voicing = _voicing(chord, previous, low=55, high=79)[:3]
        previous = voicing
        notes += [_note(velocity, pitch, chord.start, chord.end - 0.02) for pitch in voicing]
    return notes


def _counter(style: Style, chords: list[Chord], rng: np.random.Generator) -> list[pretty_midi.Note]:
    """Chord tones broken upwards and back in the octave above the comping."""
    beat, notes = style.beat, []
    step = 1.0 if style.density < 0.6 else 0.5
    velocity = rng.uniform(60, 85)
    for chord in chords:
        tones = _voicing(chord, None, low=72, high=93)
        cycle = tones + tones[-2:0:-1]
        for k in range(int(round((chord.end - chord.start) / (step * beat)))):
            start = chord.start + k * step * beat
            notes.append(_note(velocity + rng.normal(0, 5), cycle[k % len(cycle)], start, start + step * beat * 0.9))
    return notes


def _melody(style: Style, sections: list, rng: np.random.Generator) -> list[pretty_midi.Note]:
    """A phrase per section label, replayed when the section repeats."""
    scale = style.scale_pitches(60, 86)
    lengths = [0.25, 0.5, 1.0, 1.5, 2.0]
    weights = np.array([style.density, 1.0, 1.0, 0.5, 0.5 * (1 - style.density) + 0.1])
    velocity = rng.uniform(85, 110)
    phrases: dict[str, list[tuple[float, float, int]]] = {}  # label -> (beat offset, beats, pitch)
    notes = []
    for label, start, chords in sections:
        if label not in phrases:
            phrase, at, index = [], 0.0, len(scale) // 2
            total = (chords[-1].end - start) / style.beat
            while at < total - 0.25:
                if rng.random() < 0.45 * (1.1 - style.density):  # rests thin sparse melodies out
                    at += float(rng.choice([0.5, 1.0]))
                    continue
                length = min(float(rng.choice(lengths, p=weights / weights.sum())), total - at)
                chord = chords[min(int(at * style.beat // (chords[0].end - chords[0].start)), len(chords) - 1)]
                if at % 1 == 0:  # strong beats land on chord tones
                    tones = [i for i, p in enumerate(scale) if p % 12 in chord.pitch_classes]
                    target = index + rng.normal(0, 1.5)
                    index = min(tones, key=lambda i: abs(i - target))
                else:
                    index = int(np.clip(index + rng.choice([-2, -1, 1, 2], p=[0.15, 0.35, 0.35, 0.15]), 0, len(scale) - 1))
                phrase.append((at, length, int(scale[index])))
                at += length
            phrases[label] = phrase
        for at, length, pitch in phrases[label]:
            onset = start + at * style.beat
            notes.append(_note(velocity + rng.normal(0, 6), pitch, onset, onset + length * style.beat * 0.9))
    return notes


def _drums(style: Style, sections: list, rng: np.random.Generator) -> list[pretty_midi.Note]:
    groove = GROOVES[style.beats_per_bar]
    pattern = groove[str(rng.choice(list(groove)))]
    steps = 4 * style.beats_per_bar
    sixteenth = style.beat / 4
    cymbal = RIDE if rng.random() < 0.25 else CLOSED_HAT
    cymbal_every = 1 if style.density > 0.75 else 2
    notes = []

    def hit(pitch: int, at: float, velocity: float) -> None:
        notes.append(_note(velocity + rng.normal(0, 6), pitch, at, at + DRUM_SECONDS))

    for _, start, chords in sections:
        bars = int(round((chords[-1].end - start) / style.bar))
        hit(CRASH, start, 105)
        for b in range(bars):
            bar = start + b * style.bar
            if b == bars - 1:  # a fill on the section's last beat
                fill_from = steps - 4
                for k, step in enumerate(range(fill_from, steps)):
                    hit(TOMS[k % len(TOMS)] if k % 2 else SNARE, bar + step * sixteenth, 95 + 5 * k)
            else:
                fill_from = steps
            for step in range(0, fill_from, cymbal_every):
                hit(cymbal, bar + step * sixteenth, 85 if step % 4 == 0 else 65)
            for pitch, hits, velocity in pattern:
                for step in hits:
                    if step < fill_from:
                        hit(pitch, bar + step * sixteenth, velocity)
    return notes


def _humanise(part: pretty_midi.Instrument, rng: np.random.Generator, jitter: float) -> None:
    """Small timing jitter; notes stay at least 30 ms long and never start before 0."""
    for note in part.notes:
        shift = float(rng.normal(0, jitter)) if jitter else 0.0
        note.start = max(0.0, note.start + shift)
        note.end = max(note.start + 0.03, note.end + shift)
    part.notes.sort(key=lambda n: (n.start, n.pitch))
