"""Cerberus (Manilow's dissertation, chapter 3): one BLSTM stack, three heads, one weighted loss.

Heads on the shared stack:
    deep clustering (DC)  a unit-norm embedding per time-frequency bin (sigmoid, then normalised)
    mask inference (MI)   one mask per source, softmax across sources (issue 11's MaskHead), tPSA loss
    transcription (TR)    88 pitches per source, sigmoid, MSE to the binary roll of notes with velocity > 30
Loss alpha L_DC + beta L_MI + gamma L_TR. A head is switched off by its weight alone: the architecture
(and so the initial weights for a given seed) is the same for every weighting, which is what makes the
loss-weight ablation a comparison from one starting point.
"""

from __future__ import annotations

from typing import Iterable, Literal, NamedTuple

import numpy as np
import torch
from pydantic import Field, model_validator
from scipy.optimize import linear_sum_assignment
from torch import nn

from components.data.multitrack.featurize import ViewFeaturizer
from components.data.multitrack.rolls import KEYS
from components.data.multitrack.segments import SegmentConfig
from components.data.multitrack.taxonomy import class_key
from components.data.multitrack.view import ViewConfig
from components.errors import PartitaError
from components.losses.clustering import deep_clustering_loss, dominant_source, kmeans_masks, loud_bins
from components.losses.separation import tpsa_loss
from components.metrics.separation import MAX_DB, sdr, si_sdr
from components.metrics.transcription import Counts, frame_ap_by_source, note_counts, roll_to_notes
from components.models.base import Batch, ModelConfig, ModelFamily, ViewSpec
from components.models.masked_separation import SeparationScores, masked_waveforms
from components.models.masker import BLSTMStack, MaskHead, log_magnitude
from components.schema import StrictModel


class LossWeights(StrictModel):
    """(alpha, beta, gamma) of Table 3.1; Cerberus is (0.1, 0.1, 0.8)."""

    dc: float = Field(0.1, ge=0, description="alpha: deep clustering")
    mi: float = Field(0.1, ge=0, description="beta: mask inference (tPSA)")
    tr: float = Field(0.8, ge=0, description="gamma: transcription (MSE)")

    @model_validator(mode="after")
    def _some_head(self) -> "LossWeights":
        if self.dc + self.mi + self.tr <= 0:
            raise ValueError("all loss weights are 0, so nothing would be trained; give at least one of dc, mi, tr a positive weight")
        return self

    def items(self) -> tuple[tuple[str, float], ...]:
        return (("dc", self.dc), ("mi", self.mi), ("tr", self.tr))


# the chapter's source sets (2: piano + guitar, then + bass, + drums, + strings) as jointist-39 classes;
# Slakh's "guitar" is jointist-39's Electric Guitar or Acoustic Guitar: the electric one is the commoner in slakh-like pieces
DRUMS_CLASS = "Drums"
OFFSET_RATIO = 0.2  # mir_eval's note-with-offset criterion
SOURCE_ORDER = ("Piano", "Electric Guitar", "Bass", "Drums", "Strings")
SOURCE_SETS = {count: SOURCE_ORDER[:count] for count in range(2, len(SOURCE_ORDER) + 1)}


def cerberus_view(sources: int = 2) -> ViewConfig:
    """5 s segments where every chosen source has >= 10 onsets above velocity 30, with the targets all three heads need."""
    return ViewConfig(
        segment=SegmentConfig(seconds=5.0, hop_seconds=5.0, min_onsets=10, onset_velocity=30),
        sources=sources,
        classes=list(SOURCE_SETS[sources]),
        targets=["phase_sensitive", "magnitude"],
        conditioning=["rolls"],
    )


class CerberusConfig(ModelConfig):
    family: Literal["cerberus"] = "cerberus"
    hidden: int = Field(300, gt=0, description="BLSTM units per direction")
    layers: int = Field(4, gt=0)
    dropout: float = Field(0.3, ge=0, lt=1)
    embedding: int = Field(20, gt=0, description="deep-clustering embedding per bin")
    dc_floor_db: float = Field(-40.0, lt=0, description="DC loss over bins louder than this re the mixture's maximum (silent bins have no dominant source)")
    weights: LossWeights = LossWeights()
    view: ViewConfig = Field(default_factory=cerberus_view)


class CerberusOutput(NamedTuple):
    embedding: torch.Tensor  # [B, F, T, D], unit norm per bin
    masks: torch.Tensor  # [B, S, F, T], sum to one over S
    rolls: torch.Tensor  # [B, S, 88, T], in [0, 1]


class CerberusNet(nn.Module):
    def __init__(self, config: CerberusConfig, bins: int, sources: int):
        super().__init__()
        self.sources, self.embedding_dim = sources, config.embedding
        self.stack = BLSTMStack(bins, config.hidden, config.layers, config.dropout)
        self.dc = nn.Linear(2 * config.hidden, bins * config.embedding)
        self.mi = MaskHead(2 * config.hidden, bins, sources, "softmax")
        self.tr = nn.Linear(2 * config.hidden, sources * KEYS)

    def forward(self, mix_mag: torch.Tensor) -> CerberusOutput:
        b, f, t = mix_mag.shape
        hidden = self.stack(log_magnitude(mix_mag))  # [B, T, 2H]
        embedding = torch.sigmoid(self.dc(hidden).view(b, t, f, self.embedding_dim)).transpose(1, 2)
        rolls = torch.sigmoid(self.tr(hidden).view(b, t, self.sources, KEYS)).permute(0, 2, 3, 1)
        return CerberusOutput(nn.functional.normalize(embedding, dim=-1), self.mi(hidden), rolls)


def cerberus_losses(output: CerberusOutput, batch: Batch, config: CerberusConfig) -> dict[str, torch.Tensor]:
    """Each head's loss on a batch holding mix_mag, target_mag, target_psa and velocity rolls [B, S, 88, T]."""
    weights = loud_bins(batch["mix_mag"], config.dc_floor_db)
    return {
        "dc": deep_clustering_loss(output.embedding.float(), dominant_source(batch["target_mag"]), weights),
        "mi": tpsa_loss(output.masks.float(), batch["mix_mag"], batch["target_psa"]),
        "tr": nn.functional.mse_loss(output.rolls.float(), (batch["rolls"] > config.view.segment.onset_velocity).float()),
    }


def weighted_loss(losses: dict[str, torch.Tensor], weights: LossWeights) -> torch.Tensor:
    """(alpha L_DC + beta L_MI + gamma L_TR) / (alpha + beta + gamma) over the heads with a positive weight only,
    so a head at 0 gets no gradient at all (not even a NaN times zero). Dividing by the sum reads the weights on
    the simplex: Table 3.1's weightings sum to 1 already, and a search over each weight in [0, 1] explores it."""
    total = sum(weight for _, weight in weights.items())
    return sum(weight / total * losses[head] for head, weight in weights.items() if weight > 0)


def note_threshold(name: str) -> float:
    """The TR head's note threshold for an instrument class: 0.8, or 0.1 for drums (ch. 3)."""
    return 0.1 if name == DRUMS_CLASS else 0.8


def best_assignment(estimates: torch.Tensor, references: torch.Tensor) -> np.ndarray:
    """Per example, the order of the (unordered) estimates [B, S, samples] that maximises the summed SI-SDR
    against the references: DC clusters carry no source identity (scipy's Hungarian assignment)."""
    scores = si_sdr(estimates.unsqueeze(2), references.unsqueeze(1))  # [B, S est, S ref]
    return np.stack([linear_sum_assignment(np.nan_to_num(score, nan=-MAX_DB).T, maximize=True)[1] for score in scores])


class CerberusModel(nn.Module):
    """The net plus the view's featurizer (the inverse STFT at evaluation) and what scoring needs to know."""

    def __init__(self, config: CerberusConfig, spec: ViewSpec):
        super().__init__()
        self.config, self.sample_rate = config, spec.sample_rate
        self.net = CerberusNet(config, config.view.bins, config.view.sources)
        self.featurizer = ViewFeaturizer(config.view, spec.sample_rate, keep_waveforms=True)

    def forward(self, mix_mag: torch.Tensor) -> CerberusOutput:
        return self.net(mix_mag)


class Cerberus(ModelFamily):
    name = "cerberus"
    config_class = CerberusConfig
    # the weighted validation loss: the one metric every weighting (even TR alone) is trained to lower
    selection_metric = "loss"
    selection_mode = "min"

    def view(self, config: CerberusConfig) -> ViewConfig:
        return config.view

    def build(self, config: CerberusConfig, data: ViewSpec) -> nn.Module:
        return CerberusModel(config, data)

    def loss(self, model: CerberusModel, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        config = getattr(model, "module", model).config  # under DDP the trainer passes the wrapper, which has no config
        losses = cerberus_losses(model(batch["mix_mag"]), batch, config)
        total = weighted_loss(losses, config.weights)
        return total, {"loss": float(total.detach())} | {f"loss_{head}": float(value.detach()) for head, value in losses.items()}

    def separate(self, model: CerberusModel, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, CerberusOutput]:
        """Waveforms [B, S, samples] from the MI head's masks and from k-means on the DC head's embeddings
        (clusters in arbitrary order), both with the mixture phase; and the net's output."""
        mixture = batch["mixture"]
        spec = model.featurizer.stft(mixture)
        output = model(spec.abs())
        clusters = kmeans_masks(output.embedding.float(), model.config.view.sources, loud_bins(spec.abs(), model.config.dc_floor_db))
        mi, dc = (masked_waveforms(model.featurizer, masks, spec, mixture.shape[-1]) for masks in (output.masks, clusters))
        return mi, dc, output

    def evaluate(self, model: CerberusModel, batches: Iterable[Batch]) -> dict[str, float]:
        """Separation from the MI head (SDR, SI-SDR(i), as ch. 3 reads it) and the DC head (SDR after the best
        assignment of clusters to sources); note P/R/F1 of the TR head summed over sources (onset + offset,
        onset only for drums), reference notes read from the binary roll at the STFT frame rate."""
        view = model.config.view
        classes = tuple(view.classes) or tuple(f"source {s}" for s in range(view.sources))
        fps = model.sample_rate / view.stft.hop_length
        totals: dict[str, float] = {}
        count, scores, dc_sdr = 0, SeparationScores(), []
        notes = [Counts(0, 0, 0) for _ in classes]
        rolls = []  # (TR activations, reference roll) per batch, for the threshold-free frame AP
        for batch in batches:
            mi, dc, output = self.separate(model, batch)
            losses = cerberus_losses(output, batch, model.config)
            named = {"loss": weighted_loss(losses, model.config.weights)} | {f"loss_{head}": value for head, value in losses.items()}
            for name, value in named.items():
                totals[name] = totals.get(name, 0.0) + float(value) * len(mi)
            count += len(mi)
            sources = batch["sources"]
            scores.add(mi, batch["mixture"], sources)
            order = torch.from_numpy(best_assignment(dc, sources))
            dc_sdr.append(sdr(dc[torch.arange(len(dc)).unsqueeze(1), order], sources))
            reference = (batch["rolls"] > view.segment.onset_velocity).cpu().numpy()
            estimate = output.rolls.float().cpu().numpy()
            rolls.append((estimate, reference))
            for b, s in np.ndindex(reference.shape[:2]):
                notes[s] += note_counts(
                    roll_to_notes(reference[b, s].T, frames_per_second=fps),
                    roll_to_notes(estimate[b, s].T, frames_per_second=fps, frame_threshold=note_threshold(classes[s])),
                    offset_ratio=None if classes[s] == DRUMS_CLASS else OFFSET_RATIO,
                )
        # a source silent over a whole segment has no SDR (NaN): the onset filter keeps them out
        mi_sdr, mi_si_sdri = scores["sdr"], scores["si_sdri"]  # [examples, S]
        metrics = {name: total / count for name, total in totals.items()}
        metrics |= scores.means() | {"dc_sdr": float(np.nanmean(np.concatenate(dc_sdr)))}
        metrics |= dict(zip(("note_precision", "note_recall", "note_f1"), sum(notes, Counts(0, 0, 0)).scores()))
        # the TR head's framewise AP, pooled and per source, beside the chance level of a head deaf to the audio
        metrics |= frame_ap_by_source(*(np.concatenate(side) for side in zip(*rolls)), [class_key(name) for name in classes])
        for s, name in enumerate(classes):  # Table 3.3 is per instrument
            metrics |= {
                f"sdr_{class_key(name)}": float(np.nanmean(mi_sdr[:, s])),
                f"si_sdri_{class_key(name)}": float(np.nanmean(mi_si_sdri[:, s])),  # Table 4.1's MI+TR row is per source
                f"note_f1_{class_key(name)}": notes[s].scores().f1,
            }
        return metrics

    def figure(self, model: CerberusModel, batch: Batch):
        """For the first example: the mixture, then per source its MI mask, DC cluster mask and TR roll beside the reference roll."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        device = next(model.parameters()).device
        one = {key: batch[key][:1].to(device) for key in ("mixture", "mix_mag")}
        with torch.no_grad():
            output = model(one["mix_mag"])
            clusters = kmeans_masks(output.embedding.float(), model.config.view.sources, loud_bins(one["mix_mag"], model.config.dc_floor_db))
        reference = (batch["rolls"][0] > model.config.view.segment.onset_velocity).float()
        names = model.config.view.classes or [f"source {s}" for s in range(model.config.view.sources)]
        fig = Figure(figsize=(10.0, 1.8 * (1 + len(names))), layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(1 + len(names), 4, squeeze=False)
        mix_db = 20 * torch.log10(one["mix_mag"][0].float().clamp_min(1e-6)).cpu()
        axes[0, 0].imshow(mix_db.numpy(), origin="lower", aspect="auto", vmin=float(mix_db.max()) - 80, cmap="magma")
        axes[0, 0].set_title("mixture (dB)", fontsize=8)
        for ax in axes.ravel():
            ax.set_axis_off()
        for s, name in enumerate(names):
            panels = (
                (output.masks[0, s], f"{name}: MI mask"),
                (clusters[0, s], "DC cluster (any order)"),
                (output.rolls[0, s], "TR roll"),
                (reference[s], "reference roll (velocity > 30)"),
            )
            for ax, (image, title) in zip(axes[1 + s], panels):
                ax.imshow(image.float().cpu().numpy(), origin="lower", aspect="auto", vmin=0, vmax=1, cmap="viridis")
                ax.set_title(title, fontsize=8)
        return fig

    def apply(self, model: CerberusModel, audio: torch.Tensor, data: ViewSpec) -> dict:
        """Per source (named after the view's class): a WAV from the MI head's mask, with the recording's phase, and a
        MIDI of the TR head's notes at the evaluation's thresholds (0.8; 0.1 for drums), on the class's GM program."""
        from components.data.multitrack.taxonomy import load_classes
        from components.models.jointist.decode import to_midi  # the one place a class's notes become a MIDI track

        view = model.config.view
        if not view.classes:
            raise PartitaError(
                "this Cerberus run was trained on unnamed sources (model.view.classes empty), so its transcriptions have no instrument",
                "apply a run trained with model.view.classes set (every cerberus preset sets it)",
            )
        spec = model.featurizer.stft(audio.float().unsqueeze(0))
        output = model(spec.abs())
        stems = masked_waveforms(model.featurizer, output.masks, spec, audio.shape[-1])[0].cpu().numpy()
        rolls = output.rolls[0].float().cpu().numpy()
        fps, taxonomy = model.sample_rate / view.stft.hop_length, load_classes("jointist-39")  # the taxonomy SOURCE_SETS names
        files: dict = {}
        for s, name in enumerate(view.classes):
            notes = roll_to_notes(rolls[s].T, frames_per_second=fps, frame_threshold=note_threshold(name))
            files |= {f"{class_key(name)}.wav": stems[s], f"{class_key(name)}.mid": to_midi({name: notes}, taxonomy)}
        return files


CERBERUS = Cerberus()
