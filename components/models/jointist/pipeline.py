"""Applying trained Jointist models to a whole recording: which instruments play (f_IR), what each plays
(f_T, one MIDI track per instrument) and what each sounds like (f_MSS, one stem per instrument).

The recording is cut into clips of the models' segment length (the last one zero-padded), each module
runs clip by clip, and the outputs are joined in time. f_IR's clip scores are pooled by their maximum:
an instrument heard in any clip is in the piece. This is the inference the paper's i- rows use.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pretty_midi
import torch

from components.data.multitrack.taxonomy import load_classes
from components.models.jointist.decode import decode_notes, to_midi
from components.models.jointist.family import JointistModel
from components.models.jointist.separator import roll_input, with_mixture_phase

THRESHOLD = 0.5  # f_IR's decision threshold (jointist.md)


@dataclass
class Analysis:
    scores: dict[str, float]  # f_IR's pooled probability per class
    instruments: list[str]  # those above the threshold
    midi: pretty_midi.PrettyMIDI | None  # one track per instrument (with a transcriber)
    stems: dict[str, np.ndarray]  # float32 [samples] per instrument (with a separator)


def clips(waveform: torch.Tensor, samples: int) -> torch.Tensor:
    """[n] -> [clips, samples], the last clip zero-padded."""
    count = max(1, -(-len(waveform) // samples))
    return torch.nn.functional.pad(waveform, (0, count * samples - len(waveform))).view(count, samples)


@torch.no_grad()
def analyse(recognizer: JointistModel, performer: JointistModel | None, waveform: np.ndarray, threshold: float = THRESHOLD) -> Analysis:
    """`recognizer` has f_IR; `performer` (optional) has f_T and/or f_MSS; both in eval mode, at the recording's rate."""
    config = recognizer.config
    if performer is not None and performer.config.schedule == "separation_true_rolls":
        raise ValueError("a separator trained on ground-truth rolls cannot be applied to audio alone; apply a joint (f_T + f_MSS) or separation run")
    names = config.instruments.names
    samples = round(config.segment.seconds * config.audio.sample_rate)
    audio = torch.as_tensor(np.asarray(waveform, np.float32))
    batch = clips(audio, samples)
    scores = torch.sigmoid(recognizer.recognizer(recognizer.logmel(batch))).amax(dim=0)
    instruments = [name for name, score in zip(names, scores.tolist()) if score > threshold]
    notes, stems = {}, {}
    if performer is not None:
        audio_config, hop = performer.config.audio, performer.config.audio.hop_length
        frames_per_clip = samples // hop  # centred frames: the last one of a clip is the next clip's first
        for name in instruments:
            instrument = torch.full((len(batch),), performer.config.instruments.names.index(name))
            posterior = None
            if performer.transcriber is not None:
                out = performer.transcriber(performer.logmel(batch), instrument)
                onset, frame = (torch.sigmoid(out[key])[..., :frames_per_clip] for key in ("onset", "frame"))
                posterior = torch.sigmoid(out["frame"])
                t = performer.config.transcriber
                join = lambda roll: roll.permute(1, 0, 2).reshape(roll.shape[1], -1).numpy()  # noqa: E731 [clips, 88, T] -> [88, clips * T]
                notes[name] = decode_notes(join(onset), join(frame), onset_threshold=t.onset_threshold, frame_threshold=t.frame_threshold, frames_per_second=audio_config.fps)
            if performer.separator is not None:
                roll = roll_input(posterior, performer.config.separator) if performer.separator.roll_to_bins is not None else None
                magnitude = performer.separator(performer.magnitude(batch), instrument, roll)
                stems[name] = with_mixture_phase(magnitude, batch, audio_config.n_fft, hop).flatten()[: len(audio)].numpy()
    midi = to_midi(notes, load_classes(config.instruments.taxonomy)) if notes else None
    return Analysis(dict(zip(names, scores.tolist())), instruments, midi, stems)
