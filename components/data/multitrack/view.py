"""A view: what a model family trains on, cut from the pieces of a slakh-like set.

A family declares its view as part of its model config (`model.view`), so it is
validated with the rest of the config at load time and a sweep can vary it. The
view says how pieces are segmented and filtered, which stems are mixed into an
example, which targets and features the model receives and where featurisation
runs. The trainer knows only this interface, never what one view means.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from components.data.multitrack.segments import SegmentConfig
from components.schema import StrictModel

# the tensors a featurised example can hold, by what asks for them
TARGETS = ("magnitude", "phase_sensitive", "waveform")
FEATURES = ("stft", "logmel")
CONDITIONING = ("rolls",)


class StftConfig(StrictModel):
    n_fft: int = Field(1024, gt=0)
    hop_length: int = Field(256, gt=0, description="manilow ch. 3-4: 256 (62.5 frames/s at 16 kHz)")


class MelConfig(StrictModel):
    n_mels: int = Field(128, gt=0)
    top_db: float = Field(80.0, gt=0, description="floor under each example's maximum")


class ViewConfig(StrictModel):
    segment: SegmentConfig = SegmentConfig(seconds=5.0, hop_seconds=5.0)
    sources: int = Field(2, ge=1, le=8, description="salient stems mixed into an example")
    classes: list[str] = Field(
        default_factory=list,
        description="one stem of each of these instrument classes per example (e.g. Cerberus: Piano, Electric Guitar); empty: any salient stems",
    )
    examples_per_segment: int = Field(1, ge=1, description="distinct stem choices per segment (when it has that many)")
    targets: list[Literal[TARGETS]] = Field(default_factory=lambda: ["phase_sensitive"], description="per source: " + ", ".join(TARGETS))
    features: list[Literal[FEATURES]] = Field(default_factory=lambda: ["stft"], description="of the mixture: " + ", ".join(FEATURES))
    conditioning: list[Literal[CONDITIONING]] = Field(default_factory=list, description="per source: frame rolls at the STFT frame rate")
    featurise_on: Literal["data", "trainer"] = Field(
        "data", description="data: Ray Data CPU actors compute features; trainer: the trainer's device does (the stream carries waveforms)"
    )
    stft: StftConfig = StftConfig()
    mel: MelConfig = MelConfig()
    shuffle_buffer: int = Field(64, ge=1, description="examples in each trainer's local shuffle buffer")
    eval_examples: int = Field(256, gt=0, description="fixed validation and test examples (cached once per data set and view)")

    @model_validator(mode="after")
    def _consistent(self) -> "ViewConfig":
        if self.classes and len(self.classes) != self.sources:
            raise ValueError(f"view.classes names {len(self.classes)} classes but view.sources is {self.sources}")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError("view.classes must be distinct")
        if not self.targets:
            raise ValueError("view.targets needs at least one target")
        return self

    def frames(self, sample_rate: int) -> int:
        """STFT frames of one segment (centred frames, so samples // hop + 1)."""
        return round(self.segment.seconds * sample_rate) // self.stft.hop_length + 1

    @property
    def bins(self) -> int:
        return self.stft.n_fft // 2 + 1
