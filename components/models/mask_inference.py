"""Mask inference on a multi-track view: a BLSTM predicts one mask per source, trained with tPSA.

The two-source separation view (a mixture of two salient stems of a piece, 5 s
segments) with the mask-inference head of Cerberus (manilow.md ch. 3): masks
multiply the mixture magnitude, the mixture phase completes the estimate, and
SI-SDRi is measured on the waveforms of the view's fixed test segments.
"""

from __future__ import annotations

from typing import Iterable, Literal

import torch
from pydantic import Field
from torch import nn

from components.data.multitrack.featurize import ViewFeaturizer
from components.data.multitrack.segments import SegmentConfig
from components.data.multitrack.view import ViewConfig
from components.losses.separation import tpsa_loss
from components.models.base import Batch, ModelConfig, ModelFamily, ViewSpec
from components.models.masked_separation import SeparationScores, masked_waveforms
from components.models.masker import BLSTMMasker


def two_source_view() -> ViewConfig:
    return ViewConfig(segment=SegmentConfig(seconds=5.0, hop_seconds=5.0), sources=2, targets=["phase_sensitive"], features=["stft"])


class MaskInferenceConfig(ModelConfig):
    family: Literal["mask_inference"] = "mask_inference"
    hidden: int = Field(300, gt=0, description="BLSTM units per direction (Cerberus: 300)")
    layers: int = Field(4, gt=0)
    dropout: float = Field(0.3, ge=0, lt=1)
    activation: Literal["sigmoid", "softmax"] = Field("softmax", description="softmax across sources (Cerberus) or a sigmoid per source")
    view: ViewConfig = Field(default_factory=two_source_view)


class MaskInferenceModel(nn.Module):
    """Mixture magnitude -> masks; holds the view's featurizer for the inverse STFT at evaluation."""

    def __init__(self, config: MaskInferenceConfig, spec: ViewSpec):
        super().__init__()
        view = config.view
        self.masker = BLSTMMasker(view.bins, view.sources, config.hidden, config.layers, config.dropout, config.activation)
        self.featurizer = ViewFeaturizer(view, spec.sample_rate, keep_waveforms=True)

    def forward(self, mix_mag: torch.Tensor) -> torch.Tensor:
        return self.masker(mix_mag)


class MaskInference(ModelFamily):
    name = "mask_inference"
    config_class = MaskInferenceConfig
    selection_metric = "si_sdri"
    selection_mode = "max"

    def view(self, config: MaskInferenceConfig) -> ViewConfig:
        return config.view

    def build(self, config: MaskInferenceConfig, data: ViewSpec) -> nn.Module:
        return MaskInferenceModel(config, data)

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        masks = model(batch["mix_mag"])
        loss = tpsa_loss(masks.float(), batch["mix_mag"], batch["target_psa"])
        return loss, {"loss": float(loss.detach())}

    def separate(self, model: MaskInferenceModel, batch: Batch) -> torch.Tensor:
        """Waveform estimates [B, S, samples]: masks on |X|, with the mixture's phase."""
        mixture = batch["mixture"]
        spec = model.featurizer.stft(mixture)
        return masked_waveforms(model.featurizer, model(spec.abs()), spec, mixture.shape[-1])

    def evaluate(self, model: nn.Module, batches: Iterable[Batch]) -> dict[str, float]:
        losses, counts, scores = [], [], SeparationScores()
        for batch in batches:
            masks = model(batch["mix_mag"]).float()
            losses.append(float(tpsa_loss(masks, batch["mix_mag"], batch["target_psa"])) * len(masks))
            counts.append(len(masks))
            scores.add(self.separate(model, batch), batch["mixture"], batch["sources"])
        # a source silent over the whole segment has no SI-SDR (NaN): the saliency filter keeps them out
        return {"loss": sum(losses) / sum(counts)} | scores.means()

    def apply(self, model: MaskInferenceModel, audio: torch.Tensor, data: ViewSpec) -> dict:
        """One WAV per source, in the order of the model's masks (the view's sources carry no names)."""
        estimates = self.separate(model, {"mixture": audio.float().unsqueeze(0)})[0]
        return {f"source-{s + 1}.wav": estimate.cpu().numpy() for s, estimate in enumerate(estimates)}


MASK_INFERENCE = MaskInference()
