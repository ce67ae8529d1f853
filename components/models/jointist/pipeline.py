"""Applying trained Jointist models to a whole recording: which instruments play (f_IR), what each plays
(f_T, one MIDI track per instrument) and what each sounds like (f_MSS, one stem per instrument).

The recording is cut into clips of the models' segment length (the last one zero-padded), each module
runs clip by clip, and the outputs are joined in time. f_IR's clip scores are pooled by their maximum:
an instrument heard in any clip is in the piece. This is the inference the paper's i- rows use.
Without f_IR (a run of another schedule, applied alone), every class is asked about and an instrument
plays if f_T hears a note of it, or, with f_MSS alone, if its stem is salient (at least the segmenting's
min_dbfs, the data's own salience rule).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pretty_midi
import torch

from components.data.multitrack.taxonomy import load_classes
from components.errors import PartitaError
from components.models.jointist.decode import decode_notes, to_midi
from components.models.jointist.separator import roll_input, with_mixture_phase

THRESHOLD = 0.5  # f_IR's decision threshold (jointist.md)


@dataclass
class Analysis:
    scores: dict[str, float]  # f_IR's pooled probability per class (empty without f_IR)
    instruments: list[str]  # those that play: above the threshold, or heard by f_T / f_MSS
    notes: dict[str, np.ndarray]  # [n, 3] onset s, offset s, MIDI pitch per instrument (with a transcriber)
    stems: dict[str, np.ndarray]  # float32 [samples] per instrument (with a separator)
    taxonomy: str

    def midi(self, instruments: list[str] | None = None) -> pretty_midi.PrettyMIDI | None:
        """One track per instrument (default: all transcribed), with its GM program; None without a transcriber."""
        chosen = {name: self.notes[name] for name in (self.notes if instruments is None else instruments)}
        return to_midi(chosen, load_classes(self.taxonomy)) if self.notes else None


def clips(waveform: torch.Tensor, samples: int) -> torch.Tensor:
    """[n] -> [clips, samples], the last clip zero-padded."""
    count = max(1, -(-len(waveform) // samples))
    return torch.nn.functional.pad(waveform, (0, count * samples - len(waveform))).view(count, samples)


def clip_rolls(roll: np.ndarray, count: int, frames_per_clip: int) -> torch.Tensor:
    """A recording's roll [88, frames] -> [count, 88, frames_per_clip + 1], zero-padded: each clip's frames as its
    centred STFT has them (a clip's last frame is the next clip's first), the frames a training clip's roll has."""
    padded = np.zeros((roll.shape[0], count * frames_per_clip + 1), np.float32)
    kept = min(roll.shape[1], padded.shape[1])
    padded[:, :kept] = roll[:, :kept]
    return torch.from_numpy(np.stack([padded[:, c * frames_per_clip : (c + 1) * frames_per_clip + 1] for c in range(count)]))


def level_dbfs(audio: np.ndarray) -> float:
    """RMS level in dB relative to full scale (1.0)."""
    return 10.0 * float(np.log10(max(float(np.mean(np.square(audio, dtype=np.float64))), 1e-20)))


@torch.no_grad()
def analyse(
    recognizer: "torch.nn.Module | None",
    performer: "torch.nn.Module | None",
    waveform: np.ndarray,
    threshold: float = THRESHOLD,
    instruments: list[str] | None = None,
    true_frames: dict[str, np.ndarray] | None = None,
    separate: bool = True,
) -> Analysis:
    """`recognizer` has f_IR, `performer` f_T and/or f_MSS (either may be None, not both); eval mode, at the recording's rate.
    `instruments`: the performer is asked about these and they are the answer (teacher forcing, as the paper's rows
    without the i- prefix are scored), whatever f_IR says. `true_frames`: each of them's 0/1 frame roll [88, frames]
    over the recording, from its score, for a separator trained on ground-truth rolls (the upper bound).
    `separate` False: the performer's f_T alone, when only its notes are wanted."""
    if recognizer is None and performer is None:
        raise ValueError("analyse needs f_IR, f_T or f_MSS: pass a recognizer or a performer")
    if not separate and (performer is None or performer.transcriber is None):
        raise ValueError("separate=False asks for f_T's notes alone: pass a performer with f_T")
    if performer is not None and performer.config.schedule == "separation_true_rolls" and (true_frames is None or instruments is None):
        raise PartitaError(
            "a separator trained on ground-truth rolls (the upper bound) cannot be applied to audio alone",
            "apply a joint (f_T + f_MSS) or separation run",
        )
    config = (recognizer or performer).config
    names = config.instruments.names
    samples = round(config.segment.seconds * config.audio.sample_rate)
    audio = torch.as_tensor(np.asarray(waveform, np.float32))
    batch = clips(audio, samples)
    scores = {}
    if recognizer is not None:
        pooled = torch.sigmoid(recognizer.recognizer(recognizer.logmel(batch))).amax(dim=0)
        scores = dict(zip(names, pooled.tolist()))
    if instruments is not None:
        candidates = instruments
    elif recognizer is not None:
        candidates = [name for name, score in scores.items() if score > threshold]
    else:
        candidates = list(performer.config.instruments.names)
    notes, stems = {}, {}
    if performer is not None:
        audio_config, hop = performer.config.audio, performer.config.audio.hop_length
        frames_per_clip = samples // hop  # centred frames: the last one of a clip is the next clip's first
        for name in candidates:
            instrument = torch.full((len(batch),), performer.config.instruments.names.index(name))
            posterior = None
            if performer.transcriber is not None:
                out = performer.transcriber(performer.logmel(batch), instrument)
                onset, frame = (torch.sigmoid(out[key])[..., :frames_per_clip] for key in ("onset", "frame"))
                posterior = torch.sigmoid(out["frame"])
                t = performer.config.transcriber
                join = lambda roll: roll.permute(1, 0, 2).reshape(roll.shape[1], -1).numpy()  # noqa: E731 [clips, 88, T] -> [88, clips * T]
                notes[name] = decode_notes(join(onset), join(frame), onset_threshold=t.onset_threshold, frame_threshold=t.frame_threshold, frames_per_second=audio_config.fps)
            if performer.separator is not None and separate:
                if true_frames is not None:
                    roll = clip_rolls(true_frames[name], len(batch), frames_per_clip)
                elif performer.separator.roll_to_bins is not None:
                    roll = roll_input(posterior, performer.config.separator)
                else:
                    roll = None
                magnitude = performer.separator(performer.magnitude(batch), instrument, roll)
                stems[name] = with_mixture_phase(magnitude, batch, audio_config.n_fft, hop).flatten()[: len(audio)].numpy()
    if instruments is not None or recognizer is not None:
        instruments = candidates
    elif notes:
        instruments = [name for name in candidates if len(notes[name])]
    else:
        instruments = [name for name in candidates if level_dbfs(stems[name]) >= performer.config.segment.min_dbfs]
    keep = lambda found: {name: found[name] for name in instruments if name in found}  # noqa: E731
    return Analysis(scores, instruments, keep(notes), keep(stems), config.instruments.taxonomy)
