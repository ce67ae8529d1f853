"""The Jointist family on hand-made batches at tiny sizes: every schedule's loss back-propagates, evaluation
gives finite metrics, the figure is drawn, and config errors name the problem and the fix."""

import math

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from components.models.jointist.family import JOINTIST, JointistConfig

RATE, SAMPLES, K = 1600, 800, 2  # 0.5 s at hop 16: 51 frames at 100 frames/s
TINY = {
    "instruments": {"classes": ["Piano", "Bass", "Drums"]},
    "audio": {"sample_rate": RATE, "hop_length": 16, "n_mels": 16, "mel_n_fft": 128, "f_max": 800.0, "n_fft": 64},
    "recognizer": {"channels": [4, 8], "d_model": 16, "heads": 2, "depth": 1, "ffn": 16},
    "transcriber": {"channels": [4, 4], "embedding": 16, "hidden": 8},
    "separator": {"channels": [4, 8, 8]},
}


def config(**fields) -> JointistConfig:
    return JointistConfig.model_validate({**TINY, **fields})


def batch(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    stems = torch.randn(2, K, SAMPLES, generator=g) * 0.1
    stems[:, 1] = 0  # the second drawn instrument is absent: silent, no notes
    frames = torch.zeros(2, K, 88, 51, dtype=torch.uint8)
    onsets = torch.zeros_like(frames)
    frames[:, 0, 39, 5:20], onsets[:, 0, 39, 5] = 1, 1
    return {
        "mixture": stems.sum(1) + 0.05 * torch.randn(2, SAMPLES, generator=g),
        "present": torch.tensor([[1.0, 0.0, 1.0], [1.0, 0.0, 0.0]]),
        "instrument": torch.tensor([[0, 1], [0, 2]]),
        "stems": stems,
        "onsets": onsets,
        "frames": frames,
    }


@pytest.mark.parametrize(
    "schedule, metrics",
    [
        ("recognition", ["ir_map_macro", "ir_map_macro_chance"]),
        ("transcription", ["t_flat_note_f1", "t_instrument_note_offset_f1", "t_frame_ap", "t_frame_ap_chance", "t_onset_ap"]),
        ("joint", ["t_flat_note_f1", "sdr", "sdr_gain"]),
        ("separation", ["sdr_gain"]),
        ("separation_true_rolls", ["sdr_gain"]),
    ],
)
def test_schedules_train_and_evaluate(schedule, metrics):
    torch.manual_seed(0)
    model = JOINTIST.build(config(schedule=schedule), None)
    loss, logged = JOINTIST.loss(model, batch())
    loss.backward()
    assert math.isfinite(float(loss.detach())) and logged["loss"] == pytest.approx(float(loss.detach()))
    trained = [p for p in model.parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    assert trained
    model.eval()
    with torch.no_grad():
        result = JOINTIST.evaluate(model, [batch(1), batch(2)])
    for name in ["loss", *metrics]:
        assert math.isfinite(result[name]), (name, result)
    figure = JOINTIST.figure(model, batch())
    assert len([a for a in figure.axes if a.images]) >= 2 or schedule == "recognition"


def test_segment_note_scores_ask_about_the_classes_that_play_only():
    """A transcriber that hears nothing scores 0 on every aggregation: the absent class drawn beside each present one
    (empty reference, empty estimate) is not scored, where the both-empty convention would give it F1 1."""
    deaf = rigged_performer("transcription")
    with torch.no_grad():
        deaf.transcriber.onset_model.out.bias.fill_(-10.0)
        deaf.transcriber.final[1].bias.fill_(-10.0)
        metrics = JOINTIST.evaluate(deaf, [batch(1), batch(2)])
    assert metrics["t_flat_note_f1"] == metrics["t_piece_note_f1"] == metrics["t_instrument_note_f1"] == 0.0
    assert metrics["t_frame_ap_chance"] == pytest.approx(2 * 15 / (4 * 88 * 51))  # AP still counts the absent classes' silent rolls


def test_pretraining_runs_the_transcriber_alone_first():
    model = JOINTIST.build(config(schedule="joint", pretrain_steps=1), None)
    _, first = JOINTIST.loss(model, batch())
    _, second = JOINTIST.loss(model, batch())
    assert "loss_separation" not in first and "loss_separation" in second
    assert int(model.step) == 2 and "step" in model.state_dict()
    # evaluation always separates, so validation losses before and after the switch are comparable
    fresh = JOINTIST.build(config(schedule="joint", pretrain_steps=100), None).eval()
    with torch.no_grad():
        assert "loss_separation" in JOINTIST.evaluate(fresh, [batch()])


def test_a_schedule_whose_only_loss_weight_is_zero_is_refused():
    with pytest.raises(ValidationError, match="schedule recognition trains recognition, whose loss weight is 0; give loss.recognition a positive weight"):
        config(schedule="recognition", loss={"recognition": 0})


def test_unknown_instrument_is_refused_at_load():
    with pytest.raises(ValidationError, match="not in taxonomy jointist-39"):
        config(instruments={"classes": ["Theremin"]})


@pytest.mark.parametrize("preset", ["paper", "cpu", "smoke"])
def test_presets_model_sections_validate(preset):
    from pathlib import Path

    import yaml

    tree = yaml.safe_load((Path(__file__).parents[1] / "experiments" / "configs" / "jointist" / f"{preset}.yaml").read_text())
    model = JointistConfig.model_validate(tree["model"])
    assert model.schedule == "joint"


def test_smoke_preset_builds_and_steps():
    from pathlib import Path

    import yaml

    tree = yaml.safe_load((Path(__file__).parents[1] / "experiments" / "configs" / "jointist" / "smoke.yaml").read_text())
    config = JointistConfig.model_validate({**tree["model"], "instruments": {"classes": ["Piano", "Bass", "Drums"]}})
    model = JOINTIST.build(config, None)
    samples = 16000
    frames = samples // 160 + 1
    smoke = {
        "mixture": torch.randn(2, samples) * 0.1,
        "present": torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]),
        "instrument": torch.tensor([[0, 2], [1, 2]]),
        "stems": torch.zeros(2, 2, samples),
        "onsets": torch.zeros(2, 2, 88, frames, dtype=torch.uint8),
        "frames": torch.zeros(2, 2, 88, frames, dtype=torch.uint8),
    }
    for _ in range(3):
        loss, logged = JOINTIST.loss(model, smoke)
        loss.backward()
    assert "loss_separation" in logged and math.isfinite(logged["loss"])


CLIP = {"segment": {"seconds": 0.5, "hop_seconds": 0.5}}
WAVEFORM = np.random.default_rng(0).standard_normal(1300).astype(np.float32) * 0.1  # 0.81 s: two clips, the last padded


def rigged_recognizer():
    """f_IR that hears exactly Piano and Drums."""
    torch.manual_seed(0)
    recognizer = JOINTIST.build(config(schedule="recognition", **CLIP), None).eval()
    with torch.no_grad():
        recognizer.recognizer.head.weight.zero_()
        recognizer.recognizer.head.bias.copy_(torch.tensor([10.0, -10.0, 10.0]))
    return recognizer


def rigged_performer(schedule: str = "joint"):
    """f_T that plays one long MIDI 60 on every instrument it is asked about (and an untrained f_MSS)."""
    torch.manual_seed(0)
    performer = JOINTIST.build(config(schedule=schedule, **CLIP), None).eval()
    with torch.no_grad():
        performer.transcriber.onset_model.out.bias.fill_(-10.0)
        performer.transcriber.onset_model.out.bias[39] = 10.0
        performer.transcriber.final[1].weight.zero_()
        performer.transcriber.final[1].bias.fill_(-10.0)
        performer.transcriber.final[1].bias[39] = 10.0
    return performer


def test_analyse_a_recording_gives_instruments_midi_and_stems():
    from components.errors import PartitaError
    from components.models.jointist.pipeline import analyse

    result = analyse(rigged_recognizer(), rigged_performer(), WAVEFORM)
    assert result.instruments == ["Piano", "Drums"]
    assert [t.name for t in result.midi().instruments] == ["Piano", "Drums"]
    piano = result.midi().instruments[0].notes
    # one run of onset frames is one note: MIDI 60 through both clips (2 x 50 frames at 100/s), joined without a gap
    assert [(n.pitch, n.start, n.end) for n in piano] == [(60, 0.0, 1.0)]
    assert set(result.stems) == {"Piano", "Drums"} and all(len(s) == 1300 and np.isfinite(s).all() for s in result.stems.values())
    notes_only = analyse(None, rigged_performer(), WAVEFORM, instruments=["Bass"], separate=False)  # the i- rows' extra instruments
    assert notes_only.stems == {} and [tuple(note) for note in notes_only.notes["Bass"]] == [(0.0, 1.0, 60.0)]
    with pytest.raises(ValueError, match="separate=False asks for f_T's notes alone"):
        analyse(None, JOINTIST.build(config(schedule="separation", **CLIP), None).eval(), WAVEFORM, separate=False)
    upper_bound = JOINTIST.build(config(schedule="separation_true_rolls", **CLIP), None).eval()
    with pytest.raises(PartitaError, match=r"ground-truth rolls \(the upper bound\) cannot be applied to audio alone; fix: apply a joint"):
        analyse(rigged_recognizer(), upper_bound, WAVEFORM)


def test_apply_a_recognition_run_names_the_instruments_only():
    outputs = JOINTIST.apply(rigged_recognizer(), torch.from_numpy(WAVEFORM), None)
    assert set(outputs) == {"instruments.json"}
    found = outputs["instruments.json"]
    assert found["instruments"] == ["Piano", "Drums"] and found["decided_by"].startswith("f_IR")
    assert found["scores"]["Piano"] > 0.99 > 0.01 > found["scores"]["Bass"]


def test_apply_a_joint_run_writes_midi_mir_eval_matches_and_a_stem_per_instrument(tmp_path):
    import json

    import mir_eval
    import pretty_midi

    outputs = JOINTIST.apply(rigged_performer(), torch.from_numpy(WAVEFORM), None)
    # no f_IR in a joint run: every class is asked about, and f_T hears its note on each
    assert outputs["instruments.json"]["instruments"] == ["Piano", "Bass", "Drums"] and outputs["instruments.json"]["scores"] == {}
    json.dumps(outputs["instruments.json"])  # what partita apply writes
    assert set(outputs) == {"instruments.json", "piano.mid", "bass.mid", "drums.mid", "piano.wav", "bass.wav", "drums.wav"}
    assert all(outputs[f"{name}.wav"].shape == WAVEFORM.shape for name in ("piano", "bass", "drums"))
    outputs["bass.mid"].write(str(tmp_path / "bass.mid"))
    (track,) = pretty_midi.PrettyMIDI(str(tmp_path / "bass.mid")).instruments
    assert (track.name, track.program, track.is_drum) == ("Bass", 32, False)
    estimate = np.array([[n.start, n.end] for n in track.notes]), np.array([pretty_midi.note_number_to_hz(n.pitch) for n in track.notes])
    reference = np.array([[0.0, 1.0]]), np.array([pretty_midi.note_number_to_hz(60)])
    precision, recall, f1, _ = mir_eval.transcription.precision_recall_f1_overlap(*reference, *estimate, onset_tolerance=0.05, offset_ratio=0.2)
    assert (precision, recall, f1) == (1.0, 1.0, 1.0)
    assert outputs["drums.mid"].instruments[0].is_drum


def test_apply_a_separation_run_keeps_the_salient_stems():
    model = JOINTIST.build(config(schedule="separation", **CLIP), None).eval()
    with torch.no_grad():  # a mask of ~1 for every instrument: each stem is the mixture, at about -20 dBFS
        model.separator.unet.out.weight.zero_()
        model.separator.unet.out.bias.fill_(10.0)
    loud = JOINTIST.apply(model, torch.from_numpy(WAVEFORM), None)
    assert loud["instruments.json"]["instruments"] == ["Piano", "Bass", "Drums"] and not any(name.endswith(".mid") for name in loud)
    np.testing.assert_allclose(loud["piano.wav"], WAVEFORM, atol=1e-3)
    quiet = JOINTIST.apply(model, torch.from_numpy(WAVEFORM * 0.01), None)  # about -60 dBFS: below the -30 dBFS salience floor
    assert set(quiet) == {"instruments.json"} and quiet["instruments.json"]["instruments"] == []


@pytest.mark.parametrize("preset", ["smoke", "cpu", "paper"])
@pytest.mark.parametrize("table", ["transcription", "separation", "recognition"])
def test_each_scripts_sweep_loads_and_its_variants_are_the_papers_rows(table, preset):
    """What the script runs: its preset and sweep file through load_config, which validates every variant."""
    import yaml

    from orchestration.experiment import CONFIGS, load_experiment
    from tests.entry_points import script_module

    module = script_module(f"experiments/jointist_{table}.py")
    loaded = load_experiment(module.build_parser().parse_args(["--preset", preset]), "jointist", CONFIGS / f"jointist_{table}.yaml")
    assert loaded.model.family == "jointist" and loaded.data.name == "slakh-like"
    variants = loaded.sweep.variants
    schedules = {loaded.with_values(overrides).model.schedule for overrides in variants.values()}
    assert schedules == {"transcription": {"transcription", "joint"}, "separation": {"separation", "joint", "separation_true_rolls"}, "recognition": {"recognition"}}[table]
    paper = yaml.safe_load((CONFIGS / "paper" / f"jointist_{table}.yaml").read_text())
    assert [row["values"]["variant"] for row in paper["rows"]] == list(variants)


def test_build_refuses_data_at_another_rate_or_without_the_models_classes():
    from components.errors import PartitaError
    from components.models.base import ViewSpec

    assert isinstance(JOINTIST.build(config(), ViewSpec(RATE, ("Piano", "Bass", "Drums", "Organ"))), torch.nn.Module)
    with pytest.raises(PartitaError, match="at 16000 Hz but model.audio.sample_rate is 1600; fix: set model.audio.sample_rate=16000"):
        JOINTIST.build(config(), ViewSpec(16000, ("Piano", "Bass", "Drums")))
    with pytest.raises(PartitaError, match=r"\['Drums'\] are not classes of the data set"):
        JOINTIST.build(config(), ViewSpec(RATE, ("Piano", "Bass")))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.separator.merge=mean"], "model.separator.merge = 'mean': Input should be 'sum', 'concat' or 'spec_patch'"),
        (["model.separator.roll=soft"], "model.separator.roll = 'soft': Input should be 'posterior' or 'binary'"),
        (["model.separator.ste=true"], "separator.ste needs separator.roll = binary"),
        (["model.loss.separation=-1"], "model.loss.separation = -1: loss weight separation is -1.0, below 0; set it to 0 (off) or a positive weight"),
        (["model.loss.recognition=0", "model.loss.transcription=0", "model.loss.separation=0"], "every loss weight is 0, so nothing would train"),
        (["model.schedule=separation", "model.loss.separation=0"], "model.loss = {'separation': 0}: schedule separation trains separation, whose loss weight is 0; give loss.separation a positive weight"),
        (['model.instruments.classes=["Piano", "Kazoo"]'], "instrument class(es) ['Kazoo'] are not in taxonomy jointist-39; use names from: Piano, Electric Piano"),
    ],
)
def test_bad_configs_are_refused_at_load_in_one_line_naming_the_key_and_the_fix(overrides, message):
    """What `--set` on a Jointist experiment meets: load_config's one-line PartitaError (the CLI prints it and exits 2)."""
    from components.errors import PartitaError
    from orchestration.config import load_config
    from orchestration.experiment import CONFIGS

    with pytest.raises(PartitaError) as refused:
        load_config([CONFIGS / "jointist" / "smoke.yaml"], overrides, base={"data": {"name": "slakh-like"}})
    text = str(refused.value)
    assert message in text and "\n" not in text and refused.value.fix


def test_separation_is_averaged_by_source_by_piece_and_by_instrument():
    from components.metrics.separation import sdr

    model = JOINTIST.build(config(schedule="separation"), None).eval()
    with torch.no_grad():  # a mask of ~1: every estimate is the mixture, so its SDR is the mixture's and the gain 0
        model.separator.unet.out.weight.zero_()
        model.separator.unet.out.bias.fill_(10.0)
    hand = batch()
    hand["instrument"] = torch.tensor([[0, 1], [0, 2]])
    hand["present"] = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])  # example 0: Piano and Bass play; example 1: Piano
    hand["stems"][0, 1] = torch.randn(SAMPLES, generator=torch.Generator().manual_seed(1)) * 0.1
    hand["mixture"][0] = hand["stems"][0].sum(0) + 0.05
    hand["piece"] = torch.tensor([5, 6])
    with torch.no_grad():
        metrics = JOINTIST.evaluate(model, [hand])
    a, b = sdr(hand["mixture"][0], hand["stems"][0, :2])  # piece 5: Piano, Bass
    c = sdr(hand["mixture"][1], hand["stems"][1, 0])  # piece 6: Piano
    assert metrics["sdr"] == pytest.approx((a + b + c) / 3, abs=0.01)
    assert metrics["sdr_piece"] == pytest.approx(((a + b) / 2 + c) / 2, abs=0.01)
    assert metrics["sdr_instrument"] == pytest.approx(((a + c) / 2 + b) / 2, abs=0.01)
    assert metrics["sdr_gain"] == pytest.approx(0.0, abs=0.01)


def whole_piece(name: str = "tiny") -> "Piece":
    """1 s at 1600 Hz: a Piano stem playing MIDI 60 over the whole second and a Drums stem (kick, MIDI 36, at 0.2 s)."""
    from components.data.multitrack.reader import Piece
    from components.data.multitrack.rolls import NoteTable

    rng = np.random.default_rng(1)
    stems = np.round(rng.standard_normal((2, RATE)) * 0.05 * 32768).astype(np.int16)
    notes = NoteTable(np.array([0, 1], np.int16), np.array([60, 36], np.int16), np.array([90, 90], np.int16), np.array([0.0, 0.2]), np.array([1.0, 0.3]))
    return Piece(1, name, "test", RATE, ["p", "d"], [0, 0], [False, True], ["sf"], ["Piano", "Drums"], ["p", "d"], stems, notes, [], np.zeros((0, 3, 88, 101), np.uint8), b"")


def test_whole_piece_evaluation_asks_about_the_classes_that_play_and_scores_each_pieces_notes():
    from components.metrics.separation import sdr

    performer = rigged_performer()  # plays MIDI 60 from 0 to 1 s on whatever it is asked about
    metrics, rows = JOINTIST.evaluate_pieces(performer, [whole_piece("a"), whole_piece("b")])
    assert [row["instruments"] for row in rows] == [["Piano", "Drums"]] * 2  # Bass has no stem: not asked about
    assert rows[0]["notes"] == {"Piano": [1, 1], "Drums": [1, 1]}  # [transcribed, reference]
    assert metrics["pieces"] == 2 and metrics["t_flat_note_f1"] == 1.0  # the piano note, onset and pitch right; drums are not flat
    assert metrics["t_instrument_note_f1"] == 0.5  # Piano 1, Drums 0 (its MIDI 60 is not the kick)
    # the two pieces are the same: the gain is its classes' full-length SDR over the mixture's, averaged
    piece = whole_piece()
    gains = [rows[0]["sdr"][name] - float(sdr(piece.mix(), piece.class_submix(name))) for name in ("Piano", "Drums")]
    assert metrics["sdr_gain"] == pytest.approx(np.mean(gains), abs=1e-3)


def test_whole_piece_separation_with_a_mask_of_one_gains_nothing_over_the_mixture():
    model = JOINTIST.build(config(schedule="separation", **CLIP), None).eval()
    with torch.no_grad():
        model.separator.unet.out.weight.zero_()
        model.separator.unet.out.bias.fill_(10.0)
        metrics, rows = JOINTIST.evaluate_pieces(model, [whole_piece()])
    assert abs(metrics["sdr_gain"]) < 0.05 and "t_flat_note_f1" not in metrics and "notes" not in rows[0]


def test_whole_piece_recognition_pools_clips():
    metrics, rows = JOINTIST.evaluate_pieces(rigged_recognizer(), [whole_piece()])
    assert rows[0]["recognised"] == ["Piano", "Drums"] and metrics["ir_map_macro"] == 1.0


def rigged_recognizer_hearing(*heard: str):
    recognizer = rigged_recognizer()
    with torch.no_grad():
        recognizer.recognizer.head.bias.copy_(torch.tensor([10.0 if name in heard else -10.0 for name in recognizer.config.instruments.names]))
    return recognizer


def test_the_i_rows_ask_f_t_about_the_instruments_f_ir_hears():
    performer = rigged_performer()  # plays MIDI 60 on whatever it is asked about; the piece's piano plays MIDI 60
    metrics, rows = JOINTIST.evaluate_pieces(performer, [whole_piece()], recognizer=rigged_recognizer_hearing("Piano", "Drums"))
    assert rows[0]["recognised"] == ["Piano", "Drums"] and metrics["i_t_flat_note_f1"] == metrics["t_flat_note_f1"] == 1.0
    # f_IR misses the piano: f_T is not asked about it, so its note is missed (drums are not in the flat roll);
    # the teacher-forced rows are unchanged
    metrics, rows = JOINTIST.evaluate_pieces(performer, [whole_piece()], recognizer=rigged_recognizer_hearing("Drums"))
    assert rows[0]["recognised"] == ["Drums"] and metrics["i_t_flat_note_f1"] == 0.0 and metrics["t_flat_note_f1"] == 1.0
    # f_IR hears a bass instead: f_T is asked about it (not asked before) and its MIDI 60 matches, since flat is instrument-blind
    metrics, rows = JOINTIST.evaluate_pieces(performer, [whole_piece()], recognizer=rigged_recognizer_hearing("Bass", "Drums"))
    assert rows[0]["recognised"] == ["Bass", "Drums"] and metrics["i_t_flat_note_f1"] == 1.0
    assert {name for name in metrics if name.startswith("i_")} == {"i_t_flat_note_f1", "i_t_flat_note_offset_f1"}  # i- rows are flat only


@pytest.mark.parametrize(
    "performer, recognizer, message",
    [
        (lambda: rigged_performer(), lambda: rigged_performer(), r"the recognizer run has no f_IR \(its schedule is joint\); fix: pass a run trained with model.schedule=recognition"),
        (lambda: JOINTIST.build(config(schedule="separation", **CLIP), None).eval(), rigged_recognizer, r"this run has no f_T \(its schedule is separation\); fix: evaluate a transcription or joint run"),
        (
            lambda: rigged_performer(),
            lambda: JOINTIST.build(config(schedule="recognition", **CLIP, instruments={"classes": ["Piano", "Bass"]}), None).eval(),
            r"other instrument classes or another sample rate than this run; fix: pass an f_IR run trained with this run's model.instruments",
        ),
    ],
)
def test_the_i_rows_refuse_a_recognizer_that_cannot_give_them(performer, recognizer, message):
    from components.errors import PartitaError

    with pytest.raises(PartitaError, match=message):
        JOINTIST.evaluate_pieces(performer(), [whole_piece()], recognizer=recognizer())


def test_the_upper_bound_on_whole_pieces_hears_each_clip_the_rolls_it_trained_on():
    """The ground-truth-roll separator is given, clip by clip, the class's roll as a training clip of it holds it."""
    from components.errors import PartitaError
    from components.models.jointist.config import SamplerConfig
    from components.models.jointist.sampler import InstrumentSampler
    from components.models.jointist.targets import segment_example

    upper_bound = JOINTIST.build(config(schedule="separation_true_rolls", **CLIP), None).eval()
    heard, forward = [], upper_bound.separator.forward
    upper_bound.separator.forward = lambda magnitude, instrument, roll: heard.append((int(instrument[0]), roll)) or forward(magnitude, instrument, roll)
    piece, classes = whole_piece(), upper_bound.config.instruments.names
    metrics, rows = JOINTIST.evaluate_pieces(upper_bound, [piece])
    assert [classes[i] for i, _ in heard] == rows[0]["instruments"] == ["Piano", "Drums"] and np.isfinite(metrics["sdr_gain"])
    for index, roll in heard:
        only_this = InstrumentSampler(np.eye(len(classes))[index], SamplerConfig(present=1, absent=0))
        for clip, start in enumerate(range(0, RATE, SAMPLES)):
            example = segment_example(piece, classes, start, SAMPLES, 100.0, only_this, np.random.default_rng(0))
            plays = example is not None and example["instrument"][0] == index
            expected = example["frames"][0] if plays else np.zeros((88, 51), np.uint8)
            assert torch.equal(roll[clip, :, :-1], torch.from_numpy(expected[:, :-1]).float())  # but the last frame (see _frames)
    assert heard[0][1][:, 39, :-1].sum() == 100 and heard[1][1][0, 36 - 21, 20:30].sum() == 10  # piano's MIDI 60 throughout; the kick 0.2-0.3 s
    with pytest.raises(PartitaError, match=r"ground-truth rolls \(the upper bound\) cannot be applied to audio alone"):
        JOINTIST.apply(upper_bound, torch.from_numpy(WAVEFORM), None)
