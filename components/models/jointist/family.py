"""The Jointist family: f_IR, f_T and f_MSS trained under one of the paper's schedules.

Batches are Jointist examples (components.models.jointist.targets): the whole mixture, which classes
play, and per drawn instrument its stem and rolls. Features are computed in the model on the trainer's
device (log-mel for f_IR and f_T, |STFT| for f_MSS, both at 100 frames/s), so the stream carries
waveforms and rolls only. Training is teacher-forced: f_T and f_MSS are asked about the drawn (true, or
absent) instruments.

Schedules (the paper's rows):
- recognition: f_IR alone (Table 1);
- transcription: f_T alone (T);
- joint: f_T and f_MSS, f_MSS fed f_T's roll; `pretrain_steps` > 0 trains f_T alone first (pTS), 0 from
  scratch (TS); separator.merge picks sum or concat (s / c);
- separation: f_MSS told only the instrument (S only);
- separation_true_rolls: f_MSS fed the ground-truth frame roll (the upper bound).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Literal

import numpy as np
import torch
import torchaudio
from pydantic import Field, field_validator
from torch import nn

from components.data.multitrack.segments import SegmentConfig
from components.data.multitrack.taxonomy import class_key
from components.data.multitrack.view import ViewConfig
from components.metrics.separation import aggregate, sdr
from components.metrics.transcription import evaluate_notes, frame_average_precision, instrument_recognition_scores
from components.errors import PartitaError
from components.models.base import Batch, ExampleMaker, ModelConfig, ModelFamily, ViewSpec
from components.models.jointist.config import (
    SCHEDULES,
    InstrumentsConfig,
    LossWeights,
    RecognizerConfig,
    SamplerConfig,
    SeparatorConfig,
    TranscriberConfig,
)
from components.models.jointist.decode import decode_notes
from components.models.jointist.ir import InstrumentRecognizer
from components.models.jointist.sampler import InstrumentSampler
from components.models.jointist.separator import Separator, roll_input, waveform_loss, with_mixture_phase
from components.models.jointist.targets import class_counts, piece_examples
from components.models.jointist.transcriber import Transcriber, transcription_loss
from components.schema import StrictModel

LOG_FLOOR = 1e-10  # log(x + 1e-10), the authors' log-mel
MODULES = {  # schedule -> the modules it builds
    "recognition": ("recognizer",),
    "transcription": ("transcriber",),
    "joint": ("transcriber", "separator"),
    "separation": ("separator",),
    "separation_true_rolls": ("separator",),
}
WEIGHT_OF = {"recognizer": "recognition", "transcriber": "transcription", "separator": "separation"}


class AudioConfig(StrictModel):
    """16 kHz; log-mel (window 2048, 229 bins up to 8 kHz) and STFT (window 1024), both hop 160 = 100 frames/s."""

    sample_rate: int = Field(16000, gt=0)
    hop_length: int = Field(160, gt=0)
    n_mels: int = Field(229, gt=0)
    mel_n_fft: int = Field(2048, gt=0)
    f_max: float = Field(8000.0, gt=0)
    n_fft: int = Field(1024, gt=0, description="f_MSS's STFT window (the paper prints 1,028)")

    @property
    def fps(self) -> float:
        return self.sample_rate / self.hop_length


class StreamConfig(StrictModel):
    """How the view stream serves Jointist's examples (the examples themselves are the family's own: `targets`)."""

    shuffle_buffer: int = Field(64, ge=1, description="examples in each trainer's local shuffle buffer")
    eval_examples: int = Field(64, gt=0, description="fixed validation and test examples, kept as float waveforms (about 1 MB each at 4 s)")


class JointistConfig(ModelConfig):
    family: Literal["jointist"] = "jointist"
    schedule: Literal[SCHEDULES] = Field("joint", description="which modules train: " + ", ".join(SCHEDULES))
    pretrain_steps: int = Field(0, ge=0, description="joint schedule: steps of f_T alone before f_MSS joins (pTS); 0: from scratch (TS)")
    instruments: InstrumentsConfig = InstrumentsConfig()
    segment: SegmentConfig = Field(SegmentConfig(seconds=10.0, hop_seconds=10.0), description="clips cut from the pieces (paper: 10 s)")
    audio: AudioConfig = AudioConfig()
    recognizer: RecognizerConfig = RecognizerConfig()
    transcriber: TranscriberConfig = TranscriberConfig()
    separator: SeparatorConfig = SeparatorConfig()
    loss: LossWeights = LossWeights()
    sampler: SamplerConfig = SamplerConfig()
    view: StreamConfig = StreamConfig()

    @field_validator("loss")
    @classmethod
    def _schedule_trains_something(cls, loss: LossWeights, info) -> LossWeights:
        # on `loss`, not the whole model, so the error names model.loss (schedule is validated first: it comes before)
        schedule = info.data.get("schedule")
        weights = {WEIGHT_OF[m]: getattr(loss, WEIGHT_OF[m]) for m in MODULES.get(schedule, ())}
        if weights and not any(weights.values()):
            raise ValueError(
                f"schedule {schedule} trains {', '.join(weights)}, whose loss weight is 0; give {' or '.join(f'loss.{w}' for w in weights)} a positive weight"
            )
        return loss


class JointistModel(nn.Module):
    """The modules of one schedule plus the features they read, computed from waveforms on the model's device."""

    def __init__(self, config: JointistConfig):
        super().__init__()
        self.config = config
        audio, classes = config.audio, len(config.instruments.names)
        self.mel = torchaudio.transforms.MelSpectrogram(
            audio.sample_rate, n_fft=audio.mel_n_fft, hop_length=audio.hop_length, n_mels=audio.n_mels, f_max=audio.f_max
        )
        self.register_buffer("window", torch.hann_window(audio.n_fft), persistent=False)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))  # training steps taken: the pTS switch, kept in checkpoints
        modules = MODULES[config.schedule]
        self.recognizer = InstrumentRecognizer(config.recognizer, audio.n_mels, classes) if "recognizer" in modules else None
        self.transcriber = Transcriber(config.transcriber, audio.n_mels, classes) if "transcriber" in modules else None
        informed = config.schedule in ("joint", "separation_true_rolls")
        self.separator = Separator(config.separator, audio.n_fft // 2 + 1, classes, informed) if "separator" in modules else None

    def logmel(self, mixture: torch.Tensor) -> torch.Tensor:
        return torch.log(self.mel(mixture) + LOG_FLOOR)

    def magnitude(self, mixture: torch.Tensor) -> torch.Tensor:
        audio = self.config.audio
        return torch.stft(mixture, audio.n_fft, audio.hop_length, window=self.window, center=True, return_complex=True).abs()

    @property
    def separating(self) -> bool:
        """Whether f_MSS runs now: not while the joint schedule pretrains f_T alone. It always runs in evaluation,
        so validation losses stay comparable across the switch (best-checkpoint selection)."""
        pretraining = self.training and self.config.schedule == "joint" and int(self.step) < self.config.pretrain_steps
        return self.separator is not None and not pretraining

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Per example (recognition) and per drawn instrument, flattened to [B * K, ...] (transcription, separation)."""
        mixture, instrument = batch["mixture"], batch["instrument"]
        k = instrument.shape[1]
        out: dict[str, torch.Tensor] = {}
        logmel = self.logmel(mixture) if self.recognizer is not None or self.transcriber is not None else None
        if self.recognizer is not None:
            out["recognition"] = self.recognizer(logmel)
        if self.transcriber is not None:
            out.update(self.transcriber(logmel.repeat_interleave(k, 0), instrument.flatten()))
        if self.separating:
            if self.config.schedule == "joint":
                roll = roll_input(torch.sigmoid(out["frame"]), self.config.separator)
            elif self.config.schedule == "separation_true_rolls":
                roll = batch["frames"].flatten(0, 1).float()
            else:
                roll = None
            out["magnitude"] = self.separator(self.magnitude(mixture).repeat_interleave(k, 0), instrument.flatten(), roll)
        return out


def losses(model: JointistModel, batch: Batch, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The unweighted losses of the modules that ran."""
    terms = {}
    if "recognition" in out:
        terms["recognition"] = nn.functional.binary_cross_entropy_with_logits(out["recognition"], batch["present"].float())
    if "frame" in out:
        terms["transcription"] = transcription_loss(out, batch["onsets"].flatten(0, 1), batch["frames"].flatten(0, 1), model.config.transcriber)
    if "magnitude" in out:
        k = batch["instrument"].shape[1]
        audio = model.config.audio
        mixture = batch["mixture"].repeat_interleave(k, 0)
        terms["separation"] = waveform_loss(out["magnitude"], mixture, batch["stems"].flatten(0, 1), audio.n_fft, audio.hop_length)
    return terms


class Jointist(ModelFamily):
    name = "jointist"
    config_class = JointistConfig
    selection_metric = "loss"  # the weighted sum of the schedule's losses: comparable across its checkpoints
    selection_mode = "min"

    def view(self, config: JointistConfig) -> ViewConfig:
        """Only the segmenting and the stream's sizes: the examples are Jointist's own (`example_maker`)."""
        return ViewConfig(segment=config.segment, shuffle_buffer=config.view.shuffle_buffer, eval_examples=config.view.eval_examples)

    def example_maker(self, config: JointistConfig, dataset_dir: Path, cache_dir: Path | None = None) -> ExampleMaker:
        """Every stem mixed, instruments drawn by the sampler with the train split's class counts (jointist.md)."""
        names = config.instruments.names
        sampler = InstrumentSampler(class_counts(dataset_dir, names), config.sampler)
        recipe = {"family": self.name, "fps": config.audio.fps} | config.model_dump(mode="json", include={"instruments", "segment", "sampler"})
        return ExampleMaker(lambda piece, seed, draw: piece_examples(piece, names, config.segment, config.audio.fps, sampler, seed, draw), recipe)

    def build(self, config: JointistConfig, data: ViewSpec | None) -> nn.Module:
        """`data` None: a model alone (tests); a ViewSpec must match the model's rate and hold its classes."""
        if data is not None:
            if data.sample_rate != config.audio.sample_rate:
                raise PartitaError(
                    f"the data set is at {data.sample_rate} Hz but model.audio.sample_rate is {config.audio.sample_rate}",
                    f"set model.audio.sample_rate={data.sample_rate}, or build the set at {config.audio.sample_rate} Hz",
                )
            missing = [name for name in config.instruments.names if name not in data.classes]
            if missing:
                raise PartitaError(
                    f"instrument class(es) {missing} are not classes of the data set (its taxonomy differs from {config.instruments.taxonomy})",
                    "set model.instruments to the set's taxonomy or classes, or build the set with the model's taxonomy",
                )
        return JointistModel(config)

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        core = getattr(model, "module", model)  # under DDP the forward goes through the wrapper, the rest to the model
        terms = losses(core, batch, model(batch))
        total = sum(getattr(core.config.loss, name) * value for name, value in terms.items())
        if core.training:
            core.step += 1
        return total, {"loss": float(total.detach()), **{f"loss_{name}": float(value.detach()) for name, value in terms.items()}}

    def evaluate(self, model: JointistModel, batches: Iterable[Batch]) -> dict[str, float]:
        config = model.config
        names = config.instruments.names
        totals, count = {}, 0
        scores, labels = [], []
        separated = {}  # (example, class) -> (piece, class name, SDR, gain): a class drawn twice is scored once
        reference, estimate = {}, {}
        cells = {}  # "onset" / "frame" -> [(probabilities, true roll)] of each scored (example, class)
        for b, batch in enumerate(batches):
            out = model(batch)
            terms = losses(model, batch, out)
            weighted = sum(getattr(config.loss, name) * value for name, value in terms.items())
            n = len(batch["mixture"])
            for name, value in {"loss": weighted, **{f"loss_{k}": v for k, v in terms.items()}}.items():
                totals[name] = totals.get(name, 0.0) + float(value) * n
            count += n
            if "recognition" in out:
                scores.append(torch.sigmoid(out["recognition"]).cpu().numpy())
                labels.append(batch["present"].cpu().numpy())
            k = batch["instrument"].shape[1]
            instrument = batch["instrument"].flatten().cpu().numpy()
            present = batch["present"].gather(1, batch["instrument"]).flatten().bool().cpu().numpy()
            if "frame" in out:
                onset, frame = torch.sigmoid(out["onset"]).cpu().numpy(), torch.sigmoid(out["frame"]).cpu().numpy()
                true_onsets, true_frames = batch["onsets"].flatten(0, 1).cpu().numpy(), batch["frames"].flatten(0, 1).cpu().numpy()
                for row, cls in enumerate(instrument):
                    key, name = (b, row // k), names[cls]  # one "piece" per example; a class drawn twice is scored once
                    if name in reference.get(key, {}):
                        continue
                    t = config.transcriber
                    for roll, probability, truth in (("onset", onset, true_onsets), ("frame", frame, true_frames)):
                        cells.setdefault(roll, []).append((probability[row], truth[row]))  # AP: an absent class's rolls should stay off too
                    if not present[row]:  # notes of the classes that play, as the paper's teacher forcing asks: an absent class's
                        continue  # empty lists would score F1 1 by the both-empty convention and lift a deaf transcriber's piece F1
                    reference.setdefault(key, {})[name] = decode_notes(true_onsets[row], true_frames[row], onset_threshold=0.5, frame_threshold=0.5, frames_per_second=config.audio.fps)
                    estimate.setdefault(key, {})[name] = decode_notes(onset[row], frame[row], onset_threshold=t.onset_threshold, frame_threshold=t.frame_threshold, frames_per_second=config.audio.fps)
            if "magnitude" in out:
                mixture = batch["mixture"].repeat_interleave(k, 0)
                stems = batch["stems"].flatten(0, 1)
                waveform = with_mixture_phase(out["magnitude"], mixture, config.audio.n_fft, config.audio.hop_length)
                # SDR of the estimate and its gain over the mixture used as the estimate, for instruments that play
                estimated, baseline = sdr(waveform[present], stems[present]), sdr(mixture[present], stems[present])
                # the fixed examples know their piece; hand-made batches count each example as one
                pieces = batch["piece"].cpu().numpy() if "piece" in batch else [(b, e) for e in range(n)]
                for row, value, gain in zip(np.flatnonzero(present), estimated, estimated - baseline):
                    if np.isfinite(value):  # NaN: a silent reference
                        separated[(b, row // k, instrument[row])] = (pieces[row // k], names[instrument[row]], value, gain)
        metrics = {name: total / count for name, total in totals.items()}
        if scores:
            recognition = instrument_recognition_scores(np.concatenate(scores), np.concatenate(labels))
            metrics.update({f"ir_{name}": value for name, value in recognition.items()})
        if reference:
            report = evaluate_notes(reference, estimate)
            metrics.update(report.f1s("t_"))
            # threshold-free, beside the chance level of a transcriber deaf to the audio
            for roll, pairs in cells.items():
                ap, chance = frame_average_precision(*(np.stack(side) for side in zip(*pairs)))
                metrics.update({f"t_{roll}_ap": ap, f"t_{roll}_ap_chance": chance})
        if separated:
            # Table 3's three averages: by instrument class, by piece, by source (components.metrics.separation)
            by = aggregate((piece, name, value) for piece, name, value, _ in separated.values())
            metrics.update({"sdr": by.by_source.mean, "sdr_instrument": by.by_instrument.mean, "sdr_piece": by.by_piece.mean})
            metrics["sdr_gain"] = float(np.mean([gain for *_, gain in separated.values()]))
        return metrics

    def evaluate_pieces(self, model: JointistModel, pieces, recognizer: JointistModel | None = None) -> tuple[dict[str, float], list[dict]]:
        from components.models.jointist.whole_piece import evaluate_whole_pieces  # the pipeline imports this module

        return evaluate_whole_pieces(model, pieces, recognizer)

    def apply(self, model: JointistModel, audio: torch.Tensor, data) -> dict:
        """instruments.json, and per instrument that plays a MIDI file (f_T) and a WAV stem (f_MSS).

        A run has one schedule: a recognition run names the instruments (f_IR); a run of another schedule
        asks about every class and keeps those it hears (components.models.jointist.pipeline).
        """
        from components.models.jointist.pipeline import THRESHOLD, analyse  # the pipeline imports this module

        performs = model.transcriber is not None or model.separator is not None
        result = analyse(model if model.recognizer is not None else None, model if performs else None, audio.float().cpu().numpy())
        if model.recognizer is not None:
            decided = f"f_IR: probability above {THRESHOLD} in at least one {model.config.segment.seconds:g} s clip"
        elif model.transcriber is not None:
            decided = "f_T (no f_IR in this run): every class asked about, kept if at least one note is transcribed"
        else:
            decided = f"f_MSS (no f_IR in this run): every class asked about, kept if its stem is at least {model.config.segment.min_dbfs:g} dBFS"
        outputs: dict = {"instruments.json": {"instruments": result.instruments, "decided_by": decided, "scores": result.scores}}
        for name in result.instruments:
            if name in result.notes:
                outputs[f"{class_key(name)}.mid"] = result.midi([name])
            if name in result.stems:
                outputs[f"{class_key(name)}.wav"] = result.stems[name]
        return outputs

    def figure(self, model: JointistModel, batch: Batch):
        """Per drawn instrument of the first example: true and predicted frame rolls, and the mixture, estimated and true stems' spectrograms."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        first = {key: value[:1] for key, value in batch.items()}
        out = model(first)
        names = model.config.instruments.names
        panels = []
        for row, cls in enumerate(first["instrument"][0].tolist()):
            title = names[cls]
            panels.append((f"{title}: true roll", first["frames"][0, row].float()))
            if "frame" in out:
                panels.append((f"{title}: f_T roll", torch.sigmoid(out["frame"][row])))
            if "magnitude" in out:
                panels.append((f"{title}: true stem, log |STFT|", torch.log1p(model.magnitude(first["stems"][0, row : row + 1])[0])))
                panels.append((f"{title}: estimate, log |STFT|", torch.log1p(out["magnitude"][row])))
        if "magnitude" in out:
            panels.insert(0, ("mixture, log |STFT|", torch.log1p(model.magnitude(first["mixture"])[0])))
        columns = 4
        rows = -(-len(panels) // columns)
        figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3 * rows), squeeze=False)
        for axis, (title, image) in zip(axes.flat, panels):
            axis.imshow(image.detach().float().cpu().numpy(), origin="lower", aspect="auto", cmap="magma")
            axis.set_title(title, fontsize=8)
            axis.set_xlabel("frame (100/s)")
        for axis in list(axes.flat)[len(panels) :]:
            axis.axis("off")
        figure.tight_layout()
        return figure


JOINTIST = Jointist()
