"""What decides a piano-domain data set's content (manifests record all of it)."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from components.schema import StrictModel


class PianoDomainsRecipe(StrictModel):
    """piano-domains (Kelz): the same piano pieces rendered by the canonical and by other pianos.

    A piano is "SOUNDFONT:PROGRAM". Pieces are split into train-only, validation
    and test pieces; every piece is also rendered by the canonical piano.
    """

    pieces: int = Field(160, gt=0, description="MAPS has 160 classical pieces")
    music21_fraction: float = Field(0.5, ge=0, le=1, description="share of pieces from the music21 corpus (the rest arranged)")
    seed: int = 0
    max_seconds: float = Field(30.0, gt=0, description="pieces are cropped to this length")
    canonical: str = Field("FluidR3_GM:0", description="domain T (Kelz: FluidR3_GM preset 0)")
    train_pianos: tuple[str, ...] = (
        "FluidR3_GM:1",
        "FluidR3_GM:2",
        "FluidR3_GM:3",
        "TimGM6mb:1",
        "TimGM6mb:2",
        "MuseScore_General_Lite:3",
    )
    valid_pianos: tuple[str, ...] = ("MuseScore_General_Lite:1",)
    test_pianos: tuple[str, ...] = ("MuseScore_General_Lite:0", "TimGM6mb:0")
    valid_fraction: float = Field(0.125, ge=0, lt=0.5, description="pieces rendered by the validation piano")
    test_fraction: float = Field(0.375, ge=0, lt=0.6, description="pieces rendered by every test piano (Kelz: 60 of 160)")
    train_pianos_per_piece: int = Field(2, gt=0, description="train pianos that render each train piece")
    overlap_fraction: float = Field(
        0.83, ge=0, le=1, description="share of test pieces also rendered by train pianos: the 'All' split (Kelz: 50 of 60)"
    )
    sample_rate: int = Field(44100, gt=0)
    n_fft: int = Field(4096, gt=0)
    hop_length: int = Field(512, gt=0)
    n_mels: int = Field(256, gt=0)
    mel_power: float = Field(1.0, gt=0, description="1: magnitude mel (additive enough for linear demixing), 2: power")
    synth_gain: float = Field(0.2, gt=0, le=10)
    tail_seconds: float = Field(1.0, ge=0)
    dictionary_velocity: int = Field(80, ge=1, le=127, description="velocity of the isolated notes behind D_T")
    dictionary_seconds: float = Field(1.0, gt=0, description="length of each isolated note; its profile is the mean over it")

    @field_validator("canonical", "train_pianos", "valid_pianos", "test_pianos")
    @classmethod
    def _piano_specs(cls, value):
        for spec in (value,) if isinstance(value, str) else value:
            parse_piano(spec)
        return value

    @model_validator(mode="after")
    def _distinct(self) -> "PianoDomainsRecipe":
        pianos = [self.canonical, *self.train_pianos, *self.valid_pianos, *self.test_pianos]
        if len(set(pianos)) != len(pianos):
            raise ValueError("the canonical, train, validation and test pianos must all differ")
        if not self.train_pianos or not self.test_pianos:
            raise ValueError("needs at least one train and one test piano")
        if self.train_pianos_per_piece > len(self.train_pianos):
            raise ValueError(f"train_pianos_per_piece {self.train_pianos_per_piece} exceeds the {len(self.train_pianos)} train pianos")
        return self

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length


def parse_piano(spec: str) -> tuple[str, int]:
    """'FluidR3_GM:0' -> ('FluidR3_GM', 0)."""
    soundfont, _, program = spec.rpartition(":")
    if not soundfont or not program.isdigit() or not 0 <= int(program) <= 127:
        raise ValueError(f"piano {spec!r} is not SOUNDFONT:PROGRAM with a GM program 0..127")
    return soundfont, int(program)
