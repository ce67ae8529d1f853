"""Symbolic pieces: the music21 corpus (derived once into cached MIDI), MIDI files,
tidying for rendering, and a piece as work-item columns (`score_columns`/`score_midi`).

music21 bundles multi-part scores (Bach chorales, string quartets, madrigals,
Renaissance polyphony). Parsing one takes 0.1-8 s, so each chosen score is
derived once into a MIDI file under `<sources>/music21/` at 60 bpm (one quarter
note per second), one instrument per part; scores that do not fit (fewer than 3
or more than 6 parts with notes) leave a `.rejected` marker so they are not
parsed again. Tempo and instruments are chosen per piece later, when planning.
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import pretty_midi
import pyarrow as pa

from components.data.multitrack.rolls import HIGHEST, LOWEST, NoteTable
from components.errors import PartitaError

RESOLUTION = 960  # MIDI ticks per beat: about 1 ms at 60 bpm
MIN_NOTE_SECONDS = 0.01

# corpus groups, taken in turn so a few pieces already mix styles
CORPUS_GROUPS: dict[str, Callable[[str], bool]] = {
    "chorales": lambda p: p.startswith("bach/bwv") and p.endswith(".mxl"),
    "string quartets": lambda p: p.endswith(".mxl")
    and p.startswith(("haydn/", "mozart/", "beethoven/opus18", "beethoven/opus13", "schumann_robert/opus41")),
    "madrigals": lambda p: p.startswith("monteverdi/") and p.endswith(".mxl"),
    "renaissance polyphony": lambda p: p.startswith("palestrina/") and p.endswith(".krn"),
}
MIN_PARTS, MAX_PARTS, MIN_PART_NOTES = 3, 6, 8


def load_midi(path: Path) -> pretty_midi.PrettyMIDI:
    """A MIDI file, or a PartitaError naming it."""
    path = Path(path)
    if not path.is_file():
        raise PartitaError(f"MIDI file {str(path)!r} does not exist", "check the path or glob pattern")
    return parse_midi(path.read_bytes(), str(path))


def parse_midi(data: bytes, name: str) -> pretty_midi.PrettyMIDI:
    try:
        return pretty_midi.PrettyMIDI(io.BytesIO(data))
    except Exception as err:  # mido and pretty_midi raise many types on malformed files
        raise PartitaError(
            f"MIDI file {name!r} is unreadable ({type(err).__name__}: {err})",
            "replace or remove the file (a cached music21 derivation is re-derived once deleted)",
        ) from None


def midi_bytes(midi: pretty_midi.PrettyMIDI) -> bytes:
    buffer = io.BytesIO()
    midi.write(buffer)
    return buffer.getvalue()


# A piece as work-item columns: planning stays cheap (pretty_midi's writer takes about
# 0.1 s a piece) and the workers write the MIDI, in parallel.
SCORE_FIELDS = [
    ("part_names", pa.list_(pa.string())),
    ("programs", pa.list_(pa.int16())),
    ("is_drum", pa.list_(pa.bool_())),
    ("tempo", pa.float64()),
    ("time_signature", pa.list_(pa.int16())),  # [numerator, denominator], or empty
    ("key", pa.int16()),  # pretty_midi key number, -1 if none
    ("note_part", pa.list_(pa.int16())),
    ("note_pitch", pa.list_(pa.int16())),
    ("note_velocity", pa.list_(pa.int16())),
    ("note_start", pa.list_(pa.float64())),
    ("note_end", pa.list_(pa.float64())),
]


def score_columns(midi: pretty_midi.PrettyMIDI) -> dict:
    notes = NoteTable.from_midi(midi)
    tempo = midi.get_tempo_changes()[1]
    signature = midi.time_signature_changes[:1]
    return {
        "part_names": [part.name for part in midi.instruments],
        "programs": [int(part.program) for part in midi.instruments],
        "is_drum": [bool(part.is_drum) for part in midi.instruments],
        "tempo": float(tempo[0]) if len(tempo) else 120.0,
        "time_signature": [signature[0].numerator, signature[0].denominator] if signature else [],
        "key": midi.key_signature_changes[0].key_number if midi.key_signature_changes else -1,
        **{f"note_{name}": getattr(notes, name).tolist() for name in ("part", "pitch", "velocity", "start", "end")},
    }


def score_digest(columns: dict) -> bytes:
    return hashlib.sha256(json.dumps({name: columns[name] for name, _ in SCORE_FIELDS}).encode()).digest()


def score_midi(row: dict, name: str) -> tuple[pretty_midi.PrettyMIDI, bytes]:
    """A work item's piece as MIDI bytes and as read back from them.

    Everything downstream (audio, rolls, note lists) uses the read-back piece, so it
    agrees exactly with the stored MIDI, whose times are whole ticks.
    """
    midi = pretty_midi.PrettyMIDI(resolution=RESOLUTION, initial_tempo=float(row["tempo"]))
    if len(row["time_signature"]):
        midi.time_signature_changes.append(pretty_midi.TimeSignature(*map(int, row["time_signature"]), 0.0))
    if row["key"] >= 0:
        midi.key_signature_changes.append(pretty_midi.KeySignature(int(row["key"]), 0.0))
    for part_name, program, is_drum in zip(row["part_names"], row["programs"], row["is_drum"]):
        midi.instruments.append(pretty_midi.Instrument(program=int(program), is_drum=bool(is_drum), name=str(part_name)))
    notes = NoteTable.from_columns(row)
    for part, pitch, velocity, start, end in zip(notes.part, notes.pitch, notes.velocity, notes.start, notes.end):
        midi.instruments[part].notes.append(pretty_midi.Note(int(velocity), int(pitch), float(start), float(end)))
    data = midi_bytes(midi)
    return parse_midi(data, name), data


def corpus_pieces(count: int, seed: int, cache: Path) -> list[tuple[str, pretty_midi.PrettyMIDI]]:
    """`count` multi-part music21 scores as (corpus path, 60-bpm MIDI), chosen by `seed`."""
    if count == 0:
        return []
    from music21 import corpus

    root = Path(corpus.getCorePaths()[0]).parent
    while root.name != "corpus":
        root = root.parent
    paths = sorted(str(Path(p).relative_to(root)) for p in corpus.getCorePaths())
    rng = np.random.default_rng(seed)
    queues = [list(rng.permutation([p for p in paths if wanted(p)])) for wanted in CORPUS_GROUPS.values()]
    chosen = []
    while len(chosen) < count and any(queues):
        for queue in queues:
            if queue and len(chosen) < count:
                path = str(queue.pop(0))
                midi = _cached_score(path, cache)
                if midi is not None:
                    chosen.append((path, midi))
    if len(chosen) < count:
        raise PartitaError(f"the music21 corpus gave only {len(chosen)} usable scores, {count} were asked for", "lower music21_fraction or --pieces")
    return chosen


def _cached_score(path: str, cache: Path) -> pretty_midi.PrettyMIDI | None:
    target = cache / "music21" / (path.rsplit(".", 1)[0] + ".mid")
    rejected = target.with_suffix(".rejected")
    if rejected.is_file():
        return None
    if target.is_file():
        return load_midi(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    print(f"deriving music21 score {path} into {target.parent} (once)", flush=True)
    midi, reason = _derive(path)
    if midi is None:
        rejected.write_text(reason + "\n")
        return None
    partial = target.with_suffix(".mid.partial")
    midi.write(str(partial))
    partial.rename(target)
    return load_midi(target)  # what later builds will read, tick-quantised


def _derive(path: str) -> tuple[pretty_midi.PrettyMIDI | None, str]:
    from music21 import corpus

    try:
        with warnings.catch_warnings():  # music21 warns about every overfull measure
            warnings.simplefilter("ignore")
            score = corpus.parse(path)
    except Exception as err:  # music21's parsers raise many types on scores they cannot read
        return None, f"music21 could not parse it: {type(err).__name__}: {err}"
    midi = pretty_midi.PrettyMIDI(resolution=RESOLUTION, initial_tempo=60.0)
    for number, part in enumerate(getattr(score, "parts", []), 1):
        notes = []
        for element in part.stripTies().flatten().notes:
            start = float(element.offset)
            end = start + float(element.quarterLength)
            if end > start:  # grace notes have no length
                notes += [pretty_midi.Note(velocity=80, pitch=p.midi, start=start, end=end) for p in element.pitches]
        if len(notes) >= MIN_PART_NOTES:
            instrument = pretty_midi.Instrument(program=0, name=part.partName or f"part {number}")
            instrument.notes = notes
            midi.instruments.append(instrument)
    if not MIN_PARTS <= len(midi.instruments) <= MAX_PARTS:
        return None, f"{len(midi.instruments)} parts with notes, not {MIN_PARTS}..{MAX_PARTS}"
    return midi, ""


def tidy(midi: pretty_midi.PrettyMIDI, max_seconds: float, time_scale: float = 1.0) -> pretty_midi.PrettyMIDI:
    """A renderable copy: times scaled, cropped at `max_seconds`, pitches inside the 88 keys.

    Pitched notes outside A0..C8 move by octaves (drum keys outside are dropped:
    another key is another sound). A note is cut where the next note of the same
    pitch in its part starts, because a synthesiser's note-off ends both.
    """
    tempo = midi.get_tempo_changes()[1]
    out = pretty_midi.PrettyMIDI(resolution=RESOLUTION, initial_tempo=float(tempo[0]) / time_scale if len(tempo) else 120.0)
    out.time_signature_changes = [
        pretty_midi.TimeSignature(t.numerator, t.denominator, t.time * time_scale) for t in midi.time_signature_changes[:1]
    ]
    out.key_signature_changes = [pretty_midi.KeySignature(k.key_number, k.time * time_scale) for k in midi.key_signature_changes[:1]]
    for instrument in midi.instruments:
        by_pitch: dict[int, list[list[float]]] = {}
        velocity: dict[tuple[int, float], int] = {}
        for note in instrument.notes:
            start, end = note.start * time_scale, min(note.end * time_scale, max_seconds)
            pitch = note.pitch
            if instrument.is_drum and not LOWEST <= pitch <= HIGHEST:
                continue
            while pitch < LOWEST:
                pitch += 12
            while pitch > HIGHEST:
                pitch -= 12
            if start < max_seconds and end - start >= MIN_NOTE_SECONDS:
                by_pitch.setdefault(pitch, []).append([start, end])
                velocity[(pitch, start)] = note.velocity
        notes = []
        for pitch, spans in by_pitch.items():
            spans.sort()
            for (start, end), following in zip(spans, spans[1:] + [[np.inf, np.inf]]):
                end = min(end, following[0])
                if end - start >= MIN_NOTE_SECONDS:
                    notes.append(pretty_midi.Note(velocity=velocity[(pitch, start)], pitch=pitch, start=start, end=end))
        if notes:
            part = pretty_midi.Instrument(program=instrument.program, is_drum=instrument.is_drum, name=instrument.name)
            part.notes = sorted(notes, key=lambda n: (n.start, n.pitch))
            out.instruments.append(part)
    return out


def roles(midi: pretty_midi.PrettyMIDI) -> list[str]:
    """Band roles of a piece's parts: arranged parts are named by role; otherwise by register."""
    from components.data.multitrack.arranger import ROLES

    names = [instrument.name for instrument in midi.instruments]
    if all(name in ROLES for name in names):
        return names
    pitched = [i for i, instrument in enumerate(midi.instruments) if not instrument.is_drum]
    register = sorted(pitched, key=lambda i: np.mean([n.pitch for n in midi.instruments[i].notes]))
    out = ["drums" if instrument.is_drum else "inner" for instrument in midi.instruments]
    if len(register) >= 2:
        out[register[0]], out[register[-1]] = "bass", "melody"
    return out
