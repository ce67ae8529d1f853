"""Instrument assignment: a GM program per part by role and family, and a soundfont per part.

A role lists instrument families (lists of GM programs that can play it); a part
draws a family, then a program in it, then a soundfont that has that preset, so
rare and common families are equally likely and one class sounds with several
timbres. Drum parts draw a kit (bank 128 program) the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from components.errors import PartitaError

ROLE_FAMILIES: dict[str, list[tuple[int, ...]]] = {
    "bass": [(32,), (33, 34), (35,), (36, 37), (38, 39), (43,), (58, 70)],
    "comping": [(0, 1), (2, 3), (4, 5), (6, 7), (11, 12, 13), (16, 17, 18, 19), (24, 25), (26, 27, 28), (29, 30), (46,)],
    "melody": [
        (40,), (41, 42), (56, 59), (57, 60), (64, 65, 66), (68, 69), (71,), (72, 73, 74), (75, 77, 79),
        (80, 81), (82, 83, 84, 85, 86, 87), (0, 1), (26, 27), (52, 53, 54), (22, 21),
    ],
    "inner": [(40, 41), (42,), (44, 45), (48, 49), (56, 57, 60), (64, 65, 66), (68, 69, 71), (0, 1), (4, 5), (16, 19), (24, 25), (52, 53)],
    "pad": [(48, 49), (50, 51), (88, 89, 90), (91, 92, 93, 94, 95), (19, 20), (52, 53, 54), (61, 62)],
    "counter": [(8, 9, 10), (11, 12, 13, 14), (24, 25), (46,), (105, 106, 107, 108), (40,), (71, 73)],
}
# Slakh's songs are mostly one band: piano, electric guitar, electric bass and drums play in most of them, and
# Cerberus and score-informed separation (Manilow, ch. 3-4) need those four together. A band piece's parts draw
# from these programs (acoustic pianos, clean and effected electric guitars, fingered/picked/fretless basses).
BAND_PROGRAMS: dict[str, tuple[int, ...]] = {"bass": (33, 34, 35), "comping": (0, 1, 2), "melody": (26, 27, 28, 29, 30)}
DRUM_KITS = (0, 8, 16, 24, 25, 32, 40, 48)  # GM2 kits FluidR3, TimGM6mb and MuseScore share


@dataclass(frozen=True)
class Assignment:
    program: int  # GM program, or the kit for drums
    is_drum: bool
    soundfont: str


def assign(role: str, rng: np.random.Generator, presets: dict[str, set[tuple[int, int]]], program: int | None = None) -> Assignment:
    """A program (unless given) and a soundfont for a part. `presets`: soundfont -> {(bank, program)}.

    Only programs some soundfont has are drawn, so a small custom soundfont narrows the choice.
    """
    is_drum = role == "drums"
    bank = 128 if is_drum else 0
    available = set().union(*presets.values())
    if program is None:
        if not is_drum and role not in ROLE_FAMILIES:
            raise PartitaError(f"unknown part role {role!r}", f"use one of: {', '.join([*ROLE_FAMILIES, 'drums'])}")
        families = [DRUM_KITS] if is_drum else ROLE_FAMILIES[role]
        families = [f for f in ([p for p in family if (bank, p) in available] for family in families) if f]
        if not families:
            raise PartitaError(f"no configured soundfont has a preset for the {role} role ({', '.join(presets)})", "add a GM soundfont (--soundfonts)")
        family = families[rng.integers(len(families))]
        program = int(family[rng.integers(len(family))])
    able = [name for name, fonts in presets.items() if (bank, program) in fonts]
    if not able:
        raise PartitaError(
            f"no configured soundfont has {'drum kit' if is_drum else 'GM program'} {program} ({', '.join(presets)})",
            "add a soundfont that has it (--soundfonts)",
        )
    return Assignment(program, is_drum, str(able[rng.integers(len(able))]))
