"""What decides a multi-track (slakh-like) data set's content (manifests record all of it)."""

from __future__ import annotations

from pydantic import Field, model_validator

from components.schema import StrictModel

DEFAULT_SOUNDFONTS = ("FluidR3_GM", "TimGM6mb", "MuseScore_General_Lite")


class MultitrackRecipe(StrictModel):
    """slakh-like: pieces of 4-6 parts, each part rendered as its own stem, with rolls and notes."""

    pieces: int = Field(100, gt=0, description="pieces from music21 and the arranger together")
    music21_fraction: float = Field(0.3, ge=0, le=1, description="share of pieces taken from the music21 corpus")
    band_fraction: float = Field(
        0.6, ge=0, le=1,
        description="share of arranged pieces played by Slakh's usual band: piano comping, an electric guitar lead, electric bass (and drums, "
        "as every piece); the other parts, and the other pieces, draw each role's instrument families uniformly",
    )
    midi_files: list[str] = Field(default_factory=list, description="extra pieces: MIDI file paths or glob patterns")
    seed: int = Field(0, description="seed of piece choice, arrangement, instrumentation and splits")
    soundfonts: tuple[str, ...] = Field(DEFAULT_SOUNDFONTS, description="names or paths; each part draws one that has its preset")
    min_parts: int = Field(4, ge=2, le=8, description="arranged pieces have min_parts..max_parts parts")
    max_parts: int = Field(6, ge=2, le=8)
    min_seconds: float = Field(45.0, gt=0, description="arranged pieces last about min_seconds..max_seconds")
    max_seconds: float = Field(150.0, gt=0, description="also the crop of music21 and MIDI-file pieces")
    valid_fraction: float = Field(0.1, ge=0, lt=0.5)
    test_fraction: float = Field(0.1, ge=0, lt=0.5)
    sample_rate: int = Field(16000, gt=0, description="stored audio rate")
    synth_rate: int = Field(48000, gt=0, description="FluidSynth renders here, then resamples: FluidSynth does not band-limit")
    synth_gain: float = Field(0.2, gt=0, le=10, description="FluidSynth master gain before the piece is normalised")
    mix_peak: float = Field(0.9, gt=0, le=1, description="each piece is scaled so its mix peaks here (one gain for all stems)")
    tail_seconds: float = Field(1.0, ge=0, description="audio kept after the last note ends (release tails)")
    frame_rate: float = Field(100.0, gt=0, description="piano-roll frames per second (Jointist: 100)")
    classes: str = Field("jointist-39", description="class taxonomy of the rolls: bundled name or YAML path")
    hierarchy: str = Field("hierarchy-18", description="source hierarchy: bundled name or YAML path")

    @model_validator(mode="after")
    def _ranges(self) -> "MultitrackRecipe":
        if self.min_parts > self.max_parts:
            raise ValueError(f"min_parts {self.min_parts} exceeds max_parts {self.max_parts}")
        if self.min_seconds > self.max_seconds:
            raise ValueError(f"min_seconds {self.min_seconds} exceeds max_seconds {self.max_seconds}")
        if not self.soundfonts:
            raise ValueError("needs at least one soundfont")
        return self
