"""`partita apply`: a trained run and a recording in, a folder of stems out; bad input refused before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pretty_midi
import pytest
import soundfile
import torch

from components.errors import PartitaError
from components.models.registry import get_family
from components.models.base import ViewSpec
from orchestration.apply import RECORD, apply_run, families_with_apply, read_audio, write_outputs
from orchestration.cli import main
from orchestration.config import load_config
from orchestration.experiment import CONFIGS
from orchestration.tracking import RunLogger, ensure_experiment, find_or_create_run
from orchestration.trainer import CHECKPOINT_TAG

RATE = 16000


def tone(seconds: float, frequency: float, rate: int = 44100) -> np.ndarray:
    return 0.3 * np.sin(2 * np.pi * frequency * np.arange(int(seconds * rate)) / rate).astype(np.float32)


@pytest.fixture(scope="module")
def trained_run(isolated_home, tmp_path_factory) -> str:
    """A finished mask_inference run as the trainer records one: config.json, family tag, a checkpoint with the spec."""
    config = load_config([CONFIGS / "mask_inference" / "smoke.yaml"], [], base={"data": {"name": "slakh-like"}})
    spec = ViewSpec(sample_rate=RATE, classes=("piano", "bass"))
    torch.manual_seed(0)
    model = get_family("mask_inference").build(config.model, spec)
    checkpoint = tmp_path_factory.mktemp("run") / "checkpoint_000000"
    checkpoint.mkdir()
    torch.save({"model": model.state_dict(), "best_state": None, "spec": spec}, checkpoint / "state.pt")
    experiment = ensure_experiment("apply-test")
    run_id = find_or_create_run(experiment, "apply-test-run", "apply-test-run", {"partita.family": "mask_inference", CHECKPOINT_TAG: str(checkpoint)})
    logger = RunLogger(run_id)
    logger.json(config.to_dict(), "config.json")
    logger.finish()
    return run_id


def test_a_run_applied_to_a_stereo_recording_writes_one_stem_per_source_and_its_record(trained_run, tmp_path):
    recording = tmp_path / "take.wav"
    soundfile.write(str(recording), np.stack([tone(2.0, 220), tone(2.0, 330)], axis=1), 44100)
    out = apply_run(trained_run, recording, tmp_path / "stems")

    record = json.loads((out / RECORD).read_text())
    assert record["files"] == ["source-1.wav", "source-2.wav"] and record["family"] == "mask_inference"
    for name in record["files"]:
        audio, rate = soundfile.read(str(out / name))
        assert rate == RATE and abs(len(audio) - 2 * RATE) <= 1  # resampled to the run's rate, full length
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stems", "take.wav"]  # no staging folder left behind


def test_the_command_refuses_bad_input_before_writing_anything(trained_run, tmp_path, capsys):
    text = tmp_path / "notes.txt"
    text.write_text("not audio")
    assert main(["apply", trained_run, str(tmp_path / "missing.wav")]) == 2
    assert "no audio file at" in capsys.readouterr().err
    assert main(["apply", trained_run, str(text), "--out", str(tmp_path / "out")]) == 2
    assert "is not audio that libsndfile reads" in capsys.readouterr().err
    assert main(["apply", "0123456789abcdef", str(text)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_a_score_is_refused_by_a_family_that_takes_none(trained_run, tmp_path):
    recording, score = tmp_path / "take.wav", tmp_path / "take.mid"
    soundfile.write(str(recording), tone(1.0, 440), 44100)
    pretty_midi.PrettyMIDI().write(str(score))
    with pytest.raises(PartitaError, match="takes no score"):
        apply_run(trained_run, recording, tmp_path / "stems", score=score)
    assert not (tmp_path / "stems").exists()


def test_an_existing_output_folder_is_never_overwritten(trained_run, tmp_path):
    recording = tmp_path / "take.wav"
    soundfile.write(str(recording), tone(1.0, 440), 44100)
    (tmp_path / "stems").mkdir()
    with pytest.raises(PartitaError, match="already exists"):
        apply_run(trained_run, recording, tmp_path / "stems")


def test_read_audio_mixes_down_and_resamples():
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".wav") as f:
        soundfile.write(f.name, np.stack([tone(1.0, 440), -tone(1.0, 440)], axis=1), 44100, subtype="FLOAT")
        mono = read_audio(Path(f.name), RATE)
    assert mono.shape == (RATE,) and mono.abs().max() < 1e-6  # the two channels cancel


def test_outputs_are_written_by_kind(tmp_path):
    midi = pretty_midi.PrettyMIDI()
    piano = pretty_midi.Instrument(0)
    piano.notes.append(pretty_midi.Note(100, 60, 0.0, 0.5))
    midi.instruments.append(piano)
    loud = np.full(RATE, 2.0, np.float32)  # above full scale: scaled, not clipped
    written = write_outputs({"a.wav": loud, "b.mid": midi, "c.json": {"k": 1}}, tmp_path, RATE)
    assert written == ["a.wav", "b.mid", "c.json"]
    audio, _ = soundfile.read(str(tmp_path / "a.wav"))
    assert np.allclose(audio, 1.0, atol=1e-3)
    assert [n.pitch for n in pretty_midi.PrettyMIDI(str(tmp_path / "b.mid")).instruments[0].notes] == [60]
    assert json.loads((tmp_path / "c.json").read_text()) == {"k": 1}


def test_a_family_without_apply_is_named_with_those_that_have_one():
    assert "mask_inference" in families_with_apply() and "musicslots" not in families_with_apply()
    with pytest.raises(PartitaError, match="has no apply step") as err:
        get_family("musicslots").apply(None, torch.zeros(1), None)
    assert "implement apply" in err.value.fix
