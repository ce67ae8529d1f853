"""Typed configs of Jointist's modules, validated when a config is loaded.

Defaults are the paper's sizes (jointist.md); the cpu and smoke presets shrink them.
Validators raise ValueError naming the problem and the fix; config loading turns that
into the one-line PartitaError users see.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from components.data.multitrack.taxonomy import load_classes
from components.errors import PartitaError
from components.schema import StrictModel

MERGES = ("sum", "concat", "spec_patch")
ROLL_FORMS = ("posterior", "binary")
N_KEYS = 88  # MIDI 21..108
SCHEDULES = ("recognition", "transcription", "joint", "separation", "separation_true_rolls")


class RecognizerConfig(StrictModel):
    """f_IR: log-mel -> CNN front end -> Transformer encoder (CLS token) -> one logit per class."""

    channels: list[int] = Field(default_factory=lambda: [64, 128, 256, 512, 1024, 2048], min_length=1)
    d_model: int = Field(256, gt=0)
    heads: int = Field(8, gt=0)
    depth: int = Field(4, ge=1, description="Transformer encoder layers (paper, Table 1: 1..4, 4 best)")
    ffn: int = Field(1024, gt=0)
    dropout: float = Field(0.2, ge=0, lt=1)

    @model_validator(mode="after")
    def _heads_divide(self) -> "RecognizerConfig":
        if self.d_model % self.heads:
            raise ValueError(f"recognizer.d_model {self.d_model} is not a multiple of recognizer.heads {self.heads}; set heads to a divisor of d_model")
        return self


class TranscriberConfig(StrictModel):
    """f_T: Kong et al.'s onset and frame CRNNs, FiLM after every BatchNorm, a BiGRU stage over frame (+) onset."""

    channels: list[int] = Field(default_factory=lambda: [48, 64, 96, 128], min_length=1)
    embedding: int = Field(768, gt=0, description="width of the linear layer between the convolutions and the BiGRU")
    hidden: int = Field(256, gt=0, description="BiGRU units per direction")
    dropout: float = Field(0.2, ge=0, lt=1)
    # Onset cells are about 0.1% of a roll: under plain BCE a small f_T learns silence first and its onsets stay below
    # the decoding threshold for a long time. A weight > 1 on positive cells (BCE's pos_weight) pulls them up sooner.
    onset_positive_weight: float = Field(1.0, gt=0, description="BCE weight of onset cells that are on (paper: 1)")
    frame_positive_weight: float = Field(1.0, gt=0, description="BCE weight of frame cells that are on (paper: 1)")
    # A roll is nearly all off; from a zero bias f_T first spends its steps learning that, and its gradients
    # on the few "on" cells stay tiny (measured: 8 clips, 200 steps, frame AP 0.06). Starting each output at the
    # rolls' rate (its bias at the logit, as RetinaNet's prior) lets it learn the notes from the start.
    onset_prior: float | None = Field(None, gt=0, lt=1, description="initial onset probability (output bias at its logit); None: bias 0, the paper")
    frame_prior: float | None = Field(None, gt=0, lt=1, description="initial frame probability (output bias at its logit); None: bias 0, the paper")
    onset_threshold: float = Field(0.1, gt=0, lt=1, description="authors' code: 0.1")
    frame_threshold: float = Field(0.1, gt=0, lt=1, description="authors' code: 0.1")


class SeparatorConfig(StrictModel):
    """f_MSS: a FiLM-conditioned U-Net mask on |STFT|, given f_T's roll mapped to the frequency axis."""

    channels: list[int] = Field(
        default_factory=lambda: [32, 64, 128, 256, 384, 384, 384], min_length=2, description="U-Net levels (authors' code: 6 blocks + a 384 centre)"
    )
    merge: Literal[MERGES] = Field("sum", description="how the mapped roll meets the spectrogram: " + ", ".join(MERGES))
    roll: Literal[ROLL_FORMS] = Field("posterior", description="f_T's frame roll as probabilities or thresholded")
    ste: bool = Field(False, description="binary roll with a straight-through gradient into f_T")
    threshold: float = Field(0.1, gt=0, lt=1, description="binarisation threshold of the frame posteriorgram (authors' code: 0.1)")

    @model_validator(mode="after")
    def _ste_needs_binary(self) -> "SeparatorConfig":
        # A straight-through estimator replaces a hard threshold's gradient; a posteriorgram has no threshold to bypass.
        if self.ste and self.roll != "binary":
            raise ValueError("separator.ste needs separator.roll = binary (a posteriorgram has no threshold to pass gradient through); set roll=binary or ste=false")
        return self


class LossWeights(StrictModel):
    """Weights of L_IR, L_T and L_MSS (all 1 in the paper)."""

    recognition: float = 1.0
    transcription: float = 1.0
    separation: float = 1.0

    @field_validator("recognition", "transcription", "separation")
    @classmethod
    def _not_negative(cls, weight: float, info) -> float:
        if weight < 0:
            raise ValueError(f"loss weight {info.field_name} is {weight}, below 0; set it to 0 (off) or a positive weight")
        return weight

    @model_validator(mode="after")
    def _something_trains(self) -> "LossWeights":
        if not (self.recognition or self.transcription or self.separation):
            raise ValueError("every loss weight is 0, so nothing would train; give at least one of recognition, transcription, separation a positive weight")
        return self


class SamplerConfig(StrictModel):
    """Per example: present instruments drawn with replacement, probability ~ (1/count)^power, plus absent ones with empty targets."""

    present: int = Field(3, ge=1)
    absent: int = Field(1, ge=0)
    power: float = Field(0.5, ge=0, description="0: uniform over present instruments; 0.5: the authors' (1/count)^0.5")


class InstrumentsConfig(StrictModel):
    """The classes the models cover: a taxonomy and optionally a subset of its classes (empty: all)."""

    taxonomy: str = "jointist-39"
    classes: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _known(self) -> "InstrumentsConfig":
        try:
            known = load_classes(self.taxonomy).classes
        except PartitaError as err:
            raise ValueError(str(err)) from None
        unknown = [name for name in self.classes if name not in known]
        if unknown:
            raise ValueError(f"instrument class(es) {unknown} are not in taxonomy {self.taxonomy}; use names from: {', '.join(known)}")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError("instruments.classes lists a class twice; list each once")
        return self

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.classes) or load_classes(self.taxonomy).classes
