"""Kelz and Widmer's stage 1 as a model family: the U-Net denoiser that maps any piano onto the canonical one.

Trained on aligned snippets (components.data.pianos.snippets) with the MSE between
f(V_S) and V_T. The U-Net works on log(1 + V) of the linear-magnitude mel (the paper
does not say which scale it used; linear magnitudes span four orders of magnitude, so a
plain MSE there would be decided by the few loudest bins); the denoised spectrogram is
V_T' = exp(f(log(1 + V_S))) - 1, clipped at 0 for the non-negative demixing.
Stage 2 (the demixing, thresholds and the S / T / T' table) is in `demixing` and `evaluation`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Literal

import numpy as np
import torch
from pydantic import Field, ValidationError, field_validator

from components.data.pianos.recipe import PianoDomainsRecipe
from components.data.pianos.snippets import KIND, PianoSnippets, SnippetConfig
from components.errors import PartitaError
from components.metrics.similarity import ssim
from components.models.base import Batch, DataSpec, ModelConfig, ModelFamily
from components.models.kelz.demixing import DemixConfig, check_dictionary
from components.models.unet import UNet

PAPER_CHANNELS = (64, 128, 256, 512, 512)
APPLY_STATE = "apply/kelz.json"  # the run artifact `PianoTranscriber` is read from


class KelzConfig(ModelConfig):
    family: Literal["kelz"] = "kelz"
    channels: list[int] = Field(list(PAPER_CHANNELS), description="U-Net widths: input block, each level down, the bottleneck")
    snippets: SnippetConfig = SnippetConfig()
    demix: DemixConfig = DemixConfig()
    threshold_candidates: int = Field(200, ge=2, description="activation quantiles tried as each pitch's threshold")
    demix_grid: dict[str, list[Any]] = Field(
        default_factory=dict, description="the demixing sweep (Tune grid after training): demix key -> values, e.g. lambda_t: [0, 1e-4]"
    )

    @field_validator("channels")
    @classmethod
    def _levels(cls, channels: list[int]) -> list[int]:
        if len(channels) < 2 or min(channels) < 1:
            raise ValueError("needs at least two positive widths (an input block and one level down)")
        return channels

    @field_validator("demix_grid")
    @classmethod
    def _grid(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in grid.items():
            if key not in DemixConfig.model_fields:
                raise ValueError(f"{key!r} is not a demix key; use {', '.join(DemixConfig.model_fields)}")
            for value in values:
                try:
                    DemixConfig.model_validate({key: value})
                except ValidationError as err:
                    raise ValueError(f"demix_grid value {value!r} of {key!r}: {err.errors()[0]['msg']}") from None
        return grid


def compress(spectrogram: torch.Tensor) -> torch.Tensor:
    return torch.log1p(spectrogram.clamp(min=0))


@torch.no_grad()
def denoise(model: torch.nn.Module, spectrogram: torch.Tensor) -> torch.Tensor:
    """V_T' [bins, frames] >= 0 of a whole piece's V_S, fully convolutional (model in eval mode)."""
    device = next(model.parameters()).device
    out = model(compress(spectrogram.to(device, torch.float32))[None, None])[0, 0]
    return torch.expm1(out).clamp(min=0).cpu()


@dataclass(frozen=True)
class PianoTranscriber:
    """What applying a denoiser needs beyond its weights: the set's features, D_T, and stage 2's settings with the
    per-pitch thresholds fitted on T' of train + valid. experiments/kelz_two_stage.py writes it to each training
    run it demixes with (`APPLY_STATE`); a run of `partita train --family kelz` alone has no stage 2."""

    recipe: PianoDomainsRecipe  # the set's; its mel front end is the recording's (components.data.pianos.render)
    dictionary: np.ndarray  # D_T [n_mels, 88]
    thresholds: np.ndarray  # [88]
    demix: DemixConfig

    @property
    def sample_rate(self) -> int:
        return self.recipe.sample_rate

    def to_json(self) -> dict:
        return {
            "recipe": self.recipe.model_dump(mode="json"),
            "dictionary": self.dictionary.tolist(),
            "thresholds": self.thresholds.tolist(),
            "demix": self.demix.model_dump(mode="json"),
        }

    @classmethod
    def from_json(cls, tree: dict) -> "PianoTranscriber":
        recipe = PianoDomainsRecipe.model_validate(tree["recipe"])
        dictionary = np.asarray(tree["dictionary"], np.float32)
        check_dictionary(torch.from_numpy(dictionary), recipe.n_mels)
        return cls(recipe, dictionary, np.asarray(tree["thresholds"], np.float32), DemixConfig.model_validate(tree["demix"]))


class Kelz(ModelFamily):
    name = "kelz"
    config_class = KelzConfig
    selection_metric = "mse"
    selection_mode = "min"
    dataset = KIND

    def open_data(self, config: KelzConfig, path: Path) -> PianoSnippets:
        return PianoSnippets(path, config.snippets, self.name)

    def build(self, config: KelzConfig, data: DataSpec) -> torch.nn.Module:
        return UNet(1, 1, config.channels)

    def loss(self, model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        loss = torch.nn.functional.mse_loss(model(compress(batch["source"])), compress(batch["target"]))
        return loss, {"loss": float(loss.detach())}

    def evaluate(self, model: torch.nn.Module, batches: Iterable[Batch]) -> dict[str, float]:
        """Mean per-snippet MSE and SSIM of f(V_S) against V_T (log scale), and the MSE of V_S itself (no denoising)."""
        mse, identity, similarity = [], [], []
        for batch in batches:
            source, target = compress(batch["source"]), compress(batch["target"])
            estimate = model(source)
            mse += ((estimate - target).square().mean(dim=(1, 2, 3))).tolist()
            identity += ((source - target).square().mean(dim=(1, 2, 3))).tolist()
            similarity += [ssim(e[0], t[0]) for e, t in zip(estimate.float().cpu(), target.float().cpu())]
        n = max(len(mse), 1)
        return {"mse": sum(mse) / n, "mse_undenoised": sum(identity) / n, "ssim": sum(similarity) / n}

    def applied_spec(self, spec: DataSpec, artifact: Callable[[str], dict | None]) -> PianoTranscriber:
        tree = artifact(APPLY_STATE)
        if tree is None:
            raise PartitaError(
                "this kelz run holds the denoiser only: it has no demixing thresholds (stage 2), so it cannot transcribe",
                "apply a training run of experiments/kelz_two_stage.py (or its parent run), which fits and stores them",
            )
        return PianoTranscriber.from_json(tree)

    def apply(self, model: torch.nn.Module, audio: torch.Tensor, data: PianoTranscriber) -> dict:
        """The recording's mel (V_S) denoised (V_T'), demixed on D_T and thresholded per pitch: a piano MIDI file, and the
        figure of V_S beside V_T'. The thresholds are absolute activations: a recording far louder or quieter than
        the set's renderings gets more or fewer notes."""
        from components.data.multitrack.taxonomy import load_classes
        from components.data.pianos.render import mel_transform
        from components.metrics.transcription import apply_thresholds, roll_to_notes
        from components.models.jointist.decode import to_midi  # the one place notes become a MIDI track
        from components.models.kelz.demixing import decompose

        device = next(model.parameters()).device
        source = mel_transform(data.recipe).to(device)(audio.float()).cpu()
        denoised = denoise(model, source)
        (activations,) = decompose(data.dictionary, [denoised.numpy()], data.demix, device)
        notes = roll_to_notes(apply_thresholds(activations.T, data.thresholds), frames_per_second=data.recipe.frame_rate)
        return {"transcription.mid": to_midi({"Piano": notes}, load_classes("jointist-39")), "denoised.png": spectrogram_figure({"V_S (the recording)": compress(source), "V_T' (denoised)": compress(denoised)})}

    @torch.no_grad()
    def figure(self, model: torch.nn.Module, batch: Batch):
        source, target = compress(batch["source"][:1]), compress(batch["target"][:1])
        return spectrogram_figure({"V_S": source[0, 0], "V_T' (denoised)": model(source)[0, 0], "V_T": target[0, 0]})


def spectrogram_figure(panels: dict[str, torch.Tensor]):
    """Side by side, log(1 + mel) spectrograms [bins, frames] under their titles."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4 * len(panels), 4), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    for axis, (title, image) in zip(axes, panels.items()):
        axis.imshow(image.float().cpu().numpy(), origin="lower", aspect="auto", cmap="magma")
        axis.set_title(f"{title}, log(1 + mel)")
        axis.set_xlabel("frame")
    axes[0].set_ylabel("mel bin")
    return figure


KELZ = Kelz()
