"""Score-informed separation (DSIS) and source-informed transcription (DSIT): Manilow's dissertation, chapter 4.

One family, two tasks over the same 4-source view (piano, guitar, bass, drums):
    DSIS  mixture |X| + the binary piano rolls of the sources -> one mask per source, tPSA loss
    DSIT  mixture |X| + the isolated sources' |S_i|           -> one piano roll per source, MSE to the binary roll
The condition (rolls for DSIS, source spectrograms for DSIT) enters in one of three ways (`variant`):
    vanilla      concatenated to the mixture's log-magnitude frames
    roll_module  BatchNorm -> 2 BLSTM -> FC (leaky ReLU) to an embedding, concatenated to the mixture frames
    residual     the same, plus a linear projection of the raw condition added to the embedding (the raw
                 4 x 88 roll does not match the 512-d embedding: the projection is our choice, manilow.md)
then the main module: BatchNorm -> BLSTM stack -> FC, leaky ReLU. Both BLSTM stacks are masker.BLSTMStack
(its BatchNorm is per feature, so normalising the concatenation is normalising mixture and condition apart).

Also here: the controllability test (remove notes from the ground-truth rolls in nested subsets, watch
SI-SDRi fall with the normalised Hamming distance) and `apply` from a MIDI score.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import nn

from components.data.multitrack.featurize import ViewFeaturizer
from components.data.multitrack.rolls import FRAME, KEYS, LOWEST, NoteTable, piano_rolls
from components.data.multitrack.segments import SegmentConfig
from components.data.multitrack.taxonomy import class_key
from components.data.multitrack.view import ViewConfig
from components.errors import PartitaError
from components.losses.separation import tpsa_loss
from components.metrics.separation import si_sdr
from components.metrics.transcription import Counts, frame_ap_by_source, note_counts, roll_to_notes
from components.models.base import Batch, ModelConfig, ModelFamily, ViewSpec
from components.models.cerberus import OFFSET_RATIO, SOURCE_SETS
from components.models.masked_separation import SeparationScores, masked_waveforms
from components.models.masker import LOG_FLOOR, BLSTMStack, log_magnitude

NOTE_THRESHOLD = 0.5  # DSIT regresses the binary roll: halfway between its two values


def score_informed_view() -> ViewConfig:
    """Chapter 4's data: 5 s segments, 2.5 s hop, all four classes, notes above velocity 30; both tasks' targets."""
    return ViewConfig(
        segment=SegmentConfig(seconds=5.0, hop_seconds=2.5, min_onsets=5, onset_velocity=30),
        sources=4,
        classes=list(SOURCE_SETS[4]),
        targets=["phase_sensitive", "magnitude"],
        conditioning=["rolls"],
    )


class ScoreInformedConfig(ModelConfig):
    family: Literal["score_informed"] = "score_informed"
    task: Literal["separation", "transcription"] = Field("separation", description="separation: DSIS (rolls -> masks); transcription: DSIT (sources -> rolls)")
    variant: Literal["vanilla", "roll_module", "residual"] = Field("vanilla", description="how the condition enters (module docstring)")
    hidden: int = Field(600, gt=0, description="main BLSTM units per direction")
    layers: int = Field(4, gt=0, description="main BLSTM layers")
    condition_hidden: int = Field(600, gt=0, description="roll-module BLSTM units per direction")
    condition_layers: int = Field(2, gt=0, description="roll-module BLSTM layers")
    embedding: int = Field(512, gt=0, description="roll-module output features per frame")
    dropout: float = Field(0.3, ge=0, lt=1)
    negative_slope: float = Field(0.01, ge=0, lt=1, description="leaky ReLU weight of negative inputs (torch's default)")
    score: str | None = Field(None, description="DSIS apply: the MIDI score that guides separation (tracks mapped to the sources by GM program)")
    view: ViewConfig = Field(default_factory=score_informed_view)

    @model_validator(mode="after")
    def _view_serves_task(self) -> "ScoreInformedConfig":
        needs = {"separation": "phase_sensitive", "transcription": "magnitude"}[self.task]
        if needs not in self.view.targets:
            raise ValueError(f"task {self.task} needs the view's {needs!r} target: add it to model.view.targets")
        if "rolls" not in self.view.conditioning:
            raise ValueError("score-informed models need piano rolls: set model.view.conditioning to [rolls]")
        return self


def leaky(x: torch.Tensor, config: ScoreInformedConfig) -> torch.Tensor:
    return nn.functional.leaky_relu(x, config.negative_slope)


class ConditionModule(nn.Module):
    """Condition frames [B, T, C] -> embedding [B, T, E]: BatchNorm -> BLSTM stack -> FC, leaky ReLU (+ projection)."""

    def __init__(self, inputs: int, config: ScoreInformedConfig):
        super().__init__()
        self.config = config
        self.stack = BLSTMStack(inputs, config.condition_hidden, config.condition_layers, config.dropout)
        self.fc = nn.Linear(2 * config.condition_hidden, config.embedding)
        self.skip = nn.Linear(inputs, config.embedding) if config.variant == "residual" else None

    def forward(self, condition: torch.Tensor) -> torch.Tensor:
        embedding = leaky(self.fc(self.stack(condition)), self.config)
        return embedding if self.skip is None else embedding + self.skip(condition)


class ScoreInformedNet(nn.Module):
    """(mixture |X| [B, F, T], condition [B, S, C, T]) -> [B, S, O, T]: masks (O = F) or rolls (O = 88)."""

    def __init__(self, config: ScoreInformedConfig, bins: int, sources: int):
        super().__init__()
        self.config, self.sources = config, sources
        per_source_in, self.per_source_out = (KEYS, bins) if config.task == "separation" else (bins, KEYS)
        self.condition = None if config.variant == "vanilla" else ConditionModule(sources * per_source_in, config)
        conditioned = sources * per_source_in if self.condition is None else config.embedding
        self.stack = BLSTMStack(bins + conditioned, config.hidden, config.layers, config.dropout)
        self.fc = nn.Linear(2 * config.hidden, sources * self.per_source_out)

    def forward(self, mix_mag: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        b, _, t = mix_mag.shape
        frames = condition.permute(0, 3, 1, 2).reshape(b, t, -1)  # [B, T, S * C]
        if self.condition is not None:
            frames = self.condition(frames)
        hidden = self.stack(torch.cat([log_magnitude(mix_mag), frames], dim=-1))
        out = leaky(self.fc(hidden), self.config)
        return out.view(b, t, self.sources, self.per_source_out).permute(0, 2, 3, 1)


class ScoreInformedModel(nn.Module):
    """The net plus the view's featurizer (STFT and its inverse) and what reading the batch needs."""

    def __init__(self, config: ScoreInformedConfig, spec: ViewSpec):
        super().__init__()
        self.config, self.sample_rate = config, spec.sample_rate
        self.net = ScoreInformedNet(config, config.view.bins, config.view.sources)
        self.featurizer = ViewFeaturizer(config.view, spec.sample_rate, keep_waveforms=True)

    def forward(self, mix_mag: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        return self.net(mix_mag, condition)

    def binary_rolls(self, rolls: torch.Tensor) -> torch.Tensor:
        """Velocity rolls [B, S, 88, T] -> the chapter's binary rolls (velocity above the view's onset velocity)."""
        return (rolls > self.config.view.segment.onset_velocity).float()

    def condition(self, batch: Batch) -> torch.Tensor:
        if self.config.task == "separation":
            return self.binary_rolls(batch["rolls"])
        return torch.log(batch["target_mag"] + LOG_FLOOR)

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.config.view.classes) or tuple(f"source {s}" for s in range(self.config.view.sources))


def masks_of(output: torch.Tensor) -> torch.Tensor:
    """DSIS output -> masks in [0, 1]. The leaky-ReLU output is unbounded (as in the chapter), but every tPSA
    target lies in [0, |X|], so clipping the mask to [0, 1] can only bring an estimate closer to it."""
    return output.float().clamp(0.0, 1.0)


def separate(model: ScoreInformedModel, mixture: torch.Tensor, rolls: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(waveforms [B, S, samples], the net's raw output) from mixtures [B, samples] guided by binary rolls
    [B, S, 88, T]: masks on |X| (the featurizer's own STFT, so |X| is the batch's mix_mag), the mixture's phase."""
    spec = model.featurizer.stft(mixture)
    output = model(spec.abs(), rolls)
    return masked_waveforms(model.featurizer, masks_of(output), spec, mixture.shape[-1]), output


def note_subsets(roll: np.ndarray, subsets: int, rng: np.random.Generator) -> np.ndarray:
    """Binary roll [88, T] -> int [88, T]: the subset (0 .. subsets - 1) of the note at each active bin, -1 where
    silent. A note is a run of active frames on a key; notes (not bins) are shuffled and split into near-equal subsets."""
    runs = []
    for key in range(roll.shape[0]):
        edges = np.flatnonzero(np.diff(np.concatenate([[0], (roll[key] > 0).astype(np.int8), [0]])))
        runs += [(key, start, end) for start, end in zip(edges[::2], edges[1::2])]
    labels = np.full(roll.shape, -1, np.int64)
    for subset, members in enumerate(np.array_split(rng.permutation(len(runs)), subsets)):
        for i in members:
            key, start, end = runs[i]
            labels[key, start:end] = subset
    return labels


def removal_steps(rolls: np.ndarray, subsets: int, rng: np.random.Generator) -> np.ndarray:
    """Binary rolls [S, 88, T] -> [subsets + 1, S, 88, T]: step k has the notes of subsets k.. left, so the
    steps are nested, step 0 is the ground truth and the last is empty. All sources lose notes together."""
    labels = np.stack([note_subsets(roll, subsets, rng) for roll in rolls])
    return np.stack([labels >= step for step in range(subsets + 1)]).astype(np.float32)


def hamming_distance(reference: np.ndarray, edited: np.ndarray) -> np.ndarray:
    """Normalised Hamming distance over [..., 88, T] rolls = 1 - frame recall: the share of the reference's active
    bins the edited roll lacks (edits only remove notes, so no other bin differs); 0 for an empty reference."""
    active = (reference > 0).sum(axis=(-2, -1))
    missing = ((reference > 0) & ~(edited > 0)).sum(axis=(-2, -1))
    return np.where(active > 0, missing / np.maximum(active, 1), 0.0)


@dataclass
class Controllability:
    """Points of the controllability test, one per (example, step, source) with a non-silent source."""

    source: np.ndarray  # int: index into names
    step: np.ndarray  # int: subsets removed
    hamming: np.ndarray  # normalised Hamming distance to the ground-truth roll
    delta_si_sdri: np.ndarray  # SI-SDRi at this step minus SI-SDRi with the whole ground-truth roll (dB)
    names: tuple[str, ...]

    def rows(self) -> list[dict]:
        return [
            {"source": self.names[s], "step": int(k), "hamming": float(h), "delta_si_sdri": float(d)}
            for s, k, h, d in zip(self.source, self.step, self.hamming, self.delta_si_sdri)
        ]

    def figure(self):
        """Delta SI-SDRi against the Hamming distance, a panel per source, the mean per step joined by a line."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(3.2 * len(self.names), 3.0), layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, len(self.names), sharey=True, squeeze=False)[0]
        for s, (ax, name) in enumerate(zip(axes, self.names)):
            mine = self.source == s
            ax.scatter(self.hamming[mine], self.delta_si_sdri[mine], s=6, alpha=0.4)
            steps = np.unique(self.step[mine])
            means = [(self.hamming[mine & (self.step == k)].mean(), self.delta_si_sdri[mine & (self.step == k)].mean()) for k in steps]
            if means:
                ax.plot(*zip(*means), color="black", marker="o")
            ax.axhline(0.0, color="grey", linewidth=0.5)
            ax.set_title(name, fontsize=9)
            ax.set_xlabel("normalised Hamming distance")
        axes[0].set_ylabel("Δ SI-SDRi (dB)")
        return fig


def controllability(model: ScoreInformedModel, batches: Iterable[Batch], subsets: int = 5, seed: int = 0) -> Controllability:
    """The chapter's controllability test on a DSIS model: remove the ground-truth notes in `subsets` nested
    steps and separate again at every step. A model that uses the score loses quality as notes go."""
    if model.config.task != "separation":
        raise PartitaError("the controllability test edits the score of a score-informed separation (DSIS) model", "pass a DSIS run (model.task=separation)")
    rng = np.random.default_rng(seed)
    points = []
    for batch in batches:
        reference = model.binary_rolls(batch["rolls"]).cpu().numpy()
        steps = np.stack([removal_steps(rolls, subsets, rng) for rolls in reference], axis=1)  # [K, B, S, 88, T]
        scores = np.stack([
            si_sdr(separate(model, batch["mixture"], torch.from_numpy(edited).to(batch["mixture"].device))[0], batch["sources"]) for edited in steps
        ])  # [K, B, S]; SI-SDRi differences are SI-SDR differences: the mixture's term cancels
        hamming = hamming_distance(reference[None], steps)
        delta = scores - scores[:1]
        k, _, s = np.meshgrid(np.arange(len(steps)), np.arange(len(reference)), np.arange(reference.shape[1]), indexing="ij")
        keep = np.isfinite(delta)  # a silent source has no SI-SDR
        points.append((s[keep], k[keep], hamming[keep], delta[keep]))
    source, step, hamming, delta = (np.concatenate(column) for column in zip(*points))
    return Controllability(source, step, hamming, delta, model.class_names)


class ScoreInformed(ModelFamily):
    name = "score_informed"
    config_class = ScoreInformedConfig
    # the validation loss: the one metric both tasks lower (a sweep holds one task, so its runs compare)
    selection_metric = "loss"
    selection_mode = "min"

    def view(self, config: ScoreInformedConfig) -> ViewConfig:
        return config.view

    def build(self, config: ScoreInformedConfig, data: ViewSpec) -> nn.Module:
        return ScoreInformedModel(config, data)

    def task_loss(self, model: ScoreInformedModel, output: torch.Tensor, batch: Batch) -> torch.Tensor:
        """tPSA of the masks (DSIS) or MSE to the binary rolls (DSIT), of the net's output on `batch`."""
        if model.config.task == "separation":
            return tpsa_loss(output.float(), batch["mix_mag"], batch["target_psa"])
        return nn.functional.mse_loss(output.float(), model.binary_rolls(batch["rolls"]))

    def loss(self, model: ScoreInformedModel, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        loss = self.task_loss(model, model(batch["mix_mag"], model.condition(batch)), batch)
        return loss, {"loss": float(loss.detach())}

    def evaluate(self, model: ScoreInformedModel, batches: Iterable[Batch]) -> dict[str, float]:
        """DSIS: SI-SDRi per source (Table 4.1), and SDR, SI-SDR, SI-SDRi over all. DSIT: note onset+offset P/R/F1 per source and summed
        over sources, drums included (Table 4.2), reference notes read from the binary roll at the STFT frame rate."""
        names = model.class_names
        fps = model.sample_rate / model.config.view.stft.hop_length
        loss, count, scores = 0.0, 0, SeparationScores()
        notes = [Counts(0, 0, 0) for _ in names]
        rolls: list[tuple[np.ndarray, np.ndarray]] = []  # DSIT: (activations, binary roll) [B, S, frames, keys]
        for batch in batches:
            if model.config.task == "separation":  # one forward pass gives both the loss and the waveforms
                estimates, output = separate(model, batch["mixture"], model.condition(batch))
                scores.add(estimates, batch["mixture"], batch["sources"])
            else:
                output = model(batch["mix_mag"], model.condition(batch))
                estimate, reference = output.float().cpu().numpy(), model.binary_rolls(batch["rolls"]).cpu().numpy()
                rolls.append((estimate, reference))
                for b, s in np.ndindex(reference.shape[:2]):
                    notes[s] += note_counts(
                        roll_to_notes(reference[b, s].T, frames_per_second=fps),
                        roll_to_notes(estimate[b, s].T, frames_per_second=fps, frame_threshold=NOTE_THRESHOLD),
                        offset_ratio=OFFSET_RATIO,
                    )
            loss += float(self.task_loss(model, output, batch)) * len(output)
            count += len(output)
        metrics = {"loss": loss / count}
        if model.config.task == "separation":
            # a source silent over a whole segment has no SI-SDR (NaN): the view's onset filter keeps them out
            improvement = scores["si_sdri"]  # [examples, S]
            metrics |= scores.means()
            metrics |= {f"si_sdri_{class_key(name)}": float(np.nanmean(improvement[:, s])) for s, name in enumerate(names)}
        else:
            metrics |= dict(zip(("note_precision", "note_recall", "note_f1"), sum(notes, Counts(0, 0, 0)).scores()))
            metrics |= {f"note_f1_{class_key(name)}": notes[s].scores().f1 for s, name in enumerate(names)}
            # threshold-free: shows a transcriber ranking notes before its activations cross NOTE_THRESHOLD
            metrics |= frame_ap_by_source(*(np.concatenate(side) for side in zip(*rolls)), [class_key(name) for name in names])
        return metrics

    def apply(self, model: ScoreInformedModel, audio: torch.Tensor, data: ViewSpec) -> dict:
        """DSIS: one WAV per source, separated from `audio` as the score (`model.score` in the config) says,
        and score.json saying which track went to which source and how the score's length met the audio's."""
        config = model.config
        if config.task != "separation":
            raise PartitaError("a source-informed transcription (DSIT) model needs the isolated sources, which a recording does not give", "apply a DSIS run (model.task=separation)")
        if not config.score:
            raise PartitaError("score-informed separation needs a MIDI score as well as the audio", "pass the score: --set model.score=SCORE.mid")
        import pretty_midi

        try:
            midi = pretty_midi.PrettyMIDI(config.score)
        except Exception as err:
            raise PartitaError(f"cannot read the MIDI score {config.score!r}: {err}", "pass a standard MIDI file") from None
        frames = len(audio) // config.view.stft.hop_length + 1  # centred STFT frames
        rolls, report = score_rolls(midi, model.class_names, frames, data.sample_rate / config.view.stft.hop_length)
        report["audio_seconds"] = len(audio) / data.sample_rate
        estimates = separate(model, audio[None], model.binary_rolls(torch.from_numpy(rolls)[None].to(audio.device)))[0][0]
        wavs = {f"{class_key(name)}.wav": estimates[s].float().cpu().numpy() for s, name in enumerate(model.class_names)}
        return wavs | {"score.json": report}


def score_rolls(midi, classes: tuple[str, ...], frames: int, fps: float, taxonomy: str = "jointist-39") -> tuple[np.ndarray, dict]:
    """Velocity frame rolls uint8 [sources, 88, frames] of a score's tracks, each mapped to the source of its GM
    program's class, and a report of the mapping. Tracks of no source are left out (and named in the report);
    notes starting after the audio's last frame are dropped, and frames past the score's end are silent."""
    from components.data.multitrack.taxonomy import DRUMS, load_classes

    table = load_classes(taxonomy)
    tracks, source_of = [], {}
    for i, instrument in enumerate(midi.instruments):
        name = table.classes[table.class_of(DRUMS if instrument.is_drum else instrument.program)]
        source = name if name in classes else None
        # pretty_midi keeps a file's program as numpy int64, which JSON (score.json) does not take
        tracks.append({"track": i, "name": instrument.name, "program": int(instrument.program), "is_drum": bool(instrument.is_drum), "class": name, "source": source})
        if source is not None:
            source_of[i] = classes.index(source)
    if not source_of:
        found = ", ".join(sorted({t["class"] for t in tracks})) or "no tracks"
        raise PartitaError(f"no track of the score maps to a source of the model ({', '.join(classes)}); the score has: {found}", "pass the score of this recording, with tracks of those instruments (GM programs)")
    notes = NoteTable.from_midi(midi)
    mapped = np.isin(notes.part, list(source_of))
    inside = (notes.start * fps < frames) & (notes.pitch >= LOWEST) & (notes.pitch < LOWEST + KEYS)
    notes = notes.select(mapped & inside)
    rolls = piano_rolls(notes, np.array([source_of[int(p)] for p in notes.part], np.int64), len(classes), frames, fps)[:, FRAME]
    report = {"tracks": tracks, "score_seconds": float(midi.get_end_time()), "dropped_notes": int((mapped & ~inside).sum())}
    return rolls, report


SCORE_INFORMED = ScoreInformed()
