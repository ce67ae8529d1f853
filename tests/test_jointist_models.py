"""Jointist's components at tiny sizes: shapes, conditioning, decoding, merges, STE, sampler, config errors."""

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch import nn

from components.data.multitrack.taxonomy import load_classes
from components.metrics.transcription import note_scores
from components.models.jointist.config import (
    InstrumentsConfig,
    LossWeights,
    RecognizerConfig,
    SamplerConfig,
    SeparatorConfig,
    TranscriberConfig,
)
from components.models.jointist.decode import decode_notes, to_midi
from components.models.jointist.ir import InstrumentRecognizer
from components.models.jointist.sampler import InstrumentSampler
from components.models.jointist.separator import Separator, roll_input, straight_through, waveform_loss, with_mixture_phase
from components.models.jointist.transcriber import Transcriber, transcription_loss

CLASSES, MELS, FRAMES, BINS = 39, 16, 12, 33
N_FFT, HOP = 64, 16
TINY_T = TranscriberConfig(channels=[4, 4], embedding=16, hidden=8, dropout=0.0)
TINY_UNET = [4, 8, 8]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_recognizer_gives_one_logit_per_class():
    model = InstrumentRecognizer(RecognizerConfig(channels=[4, 8], d_model=16, heads=2, depth=2, ffn=32), MELS, CLASSES)
    assert model(torch.randn(3, MELS, FRAMES)).shape == (3, CLASSES)
    assert len(model.encoder.layers) == 2


def test_recognizer_refuses_too_few_mel_bins():
    with pytest.raises(ValueError, match="mel bins"):
        InstrumentRecognizer(RecognizerConfig(channels=[4, 4, 4, 4, 4]), MELS, CLASSES)


def test_transcriber_shapes_and_loss():
    model = Transcriber(TINY_T, MELS, CLASSES)
    out = model(torch.randn(2, MELS, FRAMES), torch.tensor([0, 5]))
    assert out["onset"].shape == out["frame"].shape == (2, 88, FRAMES)
    silent, full = torch.zeros(2, 88, FRAMES), torch.ones(2, 88, FRAMES)
    loss = transcription_loss(out, silent, silent, TINY_T)
    loss.backward()
    assert torch.isfinite(loss)
    # positive weights scale only the cells that are on: nothing on a silent roll, each roll's term on a full one
    weighted = TINY_T.model_copy(update={"onset_positive_weight": 5.0, "frame_positive_weight": 2.0})
    out = {name: value.detach() for name, value in out.items()}
    assert transcription_loss(out, silent, silent, weighted) == pytest.approx(float(transcription_loss(out, silent, silent, TINY_T)))
    on = {roll: nn.functional.binary_cross_entropy_with_logits(out[roll], full) for roll in ("onset", "frame")}
    assert transcription_loss(out, full, full, weighted) == pytest.approx(float(5 * on["onset"] + 2 * on["frame"]), rel=1e-5)


def test_the_transcriber_starts_at_its_priors():
    """With priors set, every output starts at the prior's logit through its bias (0 without: the paper)."""
    torch.manual_seed(0)
    plain = Transcriber(TINY_T, MELS, CLASSES)
    primed = Transcriber(TINY_T.model_copy(update={"onset_prior": 0.001, "frame_prior": 0.01}), MELS, CLASSES)
    assert float(plain.final[-1].bias.abs().max()) < 1  # PyTorch's default init, near 0
    for layer, prior in ((primed.onset_model.out, 0.001), (primed.frame_model.out, 0.01), (primed.final[-1], 0.01)):
        assert torch.allclose(torch.sigmoid(layer.bias), torch.full((88,), prior))


def test_film_conditions_the_transcriber():
    model = Transcriber(TINY_T, MELS, CLASSES).eval()
    logmel = torch.randn(1, MELS, FRAMES).expand(2, -1, -1)
    out = model(logmel, torch.tensor([3, 17]))
    assert not torch.allclose(out["frame"][0], out["frame"][1], atol=1e-4)
    same = model(logmel, torch.tensor([3, 3]))
    torch.testing.assert_close(same["frame"][0], same["frame"][1])


def test_film_conditions_the_separator():
    model = Separator(SeparatorConfig(channels=TINY_UNET), BINS, CLASSES, informed=False).eval()
    mix = torch.rand(1, BINS, FRAMES).expand(2, -1, -1)
    out = model(mix, torch.tensor([0, 38]))
    assert out.shape == (2, BINS, FRAMES)
    assert not torch.allclose(out[0], out[1], atol=1e-5)


def test_onset_gated_decoder_on_a_hand_made_roll():
    onset, frame = np.zeros((88, 10)), np.zeros((88, 10))
    # MIDI 60 (key 39): an onset at frame 1, frames through 4 -> one note [0.01, 0.05)
    onset[39, 1], frame[39, 1:5] = 0.9, 0.9
    # MIDI 64 (key 43): frames 2..6 without an onset -> no note (onsets gate frames)
    frame[43, 2:7] = 0.9
    # MIDI 67 (key 46): a re-onset at frame 5 splits one run of frames into two notes
    onset[46, [0, 5]], frame[46, 0:8] = 0.9, 0.9
    # a frame probability under the threshold ends a note: key 50 sounds frames 3..4 only
    onset[50, 3], frame[50, 3:5], frame[50, 5] = 0.9, 0.9, 0.05
    notes = decode_notes(onset, frame, onset_threshold=0.1, frame_threshold=0.1)
    expected = np.array([[0.00, 0.05, 67], [0.01, 0.05, 60], [0.03, 0.05, 71], [0.05, 0.08, 67]])
    np.testing.assert_allclose(notes, expected)
    midi = to_midi({"Piano": notes, "Drums": notes[:1]}, load_classes())
    assert [(t.name, t.program, t.is_drum) for t in midi.instruments] == [("Piano", 0, False), ("Drums", 0, True)]
    back = np.array([[n.start, n.end, n.pitch] for n in midi.instruments[0].notes])
    assert note_scores(expected, back, offset_ratio=0.2).f1 == 1.0


@pytest.mark.parametrize("merge", ["sum", "concat", "spec_patch"])
@pytest.mark.parametrize("roll,ste", [("posterior", False), ("binary", False), ("binary", True)])
def test_merge_modes_and_roll_forms_run_and_backpropagate(merge, roll, ste):
    config = SeparatorConfig(channels=TINY_UNET, merge=merge, roll=roll, ste=ste)
    separator = Separator(config, BINS, CLASSES)
    transcriber = Transcriber(TINY_T, MELS, CLASSES)
    instrument = torch.tensor([1, 2])
    posterior = torch.sigmoid(transcriber(torch.randn(2, MELS, FRAMES), instrument)["frame"])
    mixture = torch.randn(2, (FRAMES - 1) * HOP)
    window = torch.hann_window(N_FFT)
    mix_mag = torch.stft(mixture, N_FFT, HOP, window=window, return_complex=True).abs()
    estimate = separator(mix_mag, instrument, roll_input(posterior, config))
    assert estimate.shape == mix_mag.shape and (estimate <= mix_mag + 1e-6).all()
    waveform_loss(estimate, mixture, torch.randn_like(mixture), N_FFT, HOP).backward()
    assert separator.roll_to_bins.weight.grad.abs().sum() > 0
    into_transcriber = transcriber.frame_model.out.weight.grad
    # a hard threshold without the STE cuts f_T off from the separation loss
    assert (into_transcriber is None) == (roll == "binary" and not ste)


def test_straight_through_is_binary_forward_identity_backward():
    posterior = torch.tensor([0.05, 0.2, 0.9], requires_grad=True)
    out = straight_through(posterior, 0.1)
    assert out.tolist() == [0.0, 1.0, 1.0]
    (out * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert posterior.grad.tolist() == [1.0, 2.0, 3.0]


def test_mixture_phase_round_trip():
    mixture = torch.randn(2, 400)
    spectrum = torch.stft(mixture, N_FFT, HOP, window=torch.hann_window(N_FFT), return_complex=True)
    torch.testing.assert_close(with_mixture_phase(spectrum.abs(), mixture, N_FFT, HOP), mixture, atol=1e-4, rtol=1e-4)


def test_sampler_follows_inverse_square_root_of_counts():
    counts = [100, 25, 4, 9, 1]
    sampler = InstrumentSampler(counts, SamplerConfig(present=3, absent=1))
    rng = np.random.default_rng(0)
    drawn, absent = [], []
    for _ in range(4000):
        classes, present = sampler.draw([0, 1, 2], rng)
        assert present.tolist() == [True, True, True, False]
        drawn += classes[present].tolist()
        absent += classes[~present].tolist()
    weights = np.array(counts[:3], float) ** -0.5
    expected = weights / weights.sum()  # 0.125, 0.25, 0.625
    observed = np.bincount(drawn, minlength=3) / len(drawn)
    np.testing.assert_allclose(observed, expected, atol=0.015)
    assert set(absent) == {3, 4}  # never a playing instrument


def test_sampler_keeps_its_size_when_every_class_plays():
    # examples batch together only if each draws present + absent instruments
    sampler = InstrumentSampler([5, 5, 5], SamplerConfig(present=1, absent=2))
    classes, present = sampler.draw([0, 1, 2], np.random.default_rng(0))
    assert len(classes) == 3 and present.all()
    classes, present = sampler.draw([0, 2], np.random.default_rng(0))
    assert present.tolist() == [True, True, False] and classes[2] == 1


def test_sampler_with_power_zero_is_uniform():
    sampler = InstrumentSampler([1000, 1], SamplerConfig(present=1, absent=0, power=0))
    rng = np.random.default_rng(1)
    drawn = [sampler.draw([0, 1], rng)[0][0] for _ in range(4000)]
    assert abs(np.mean(drawn) - 0.5) < 0.03


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda: SeparatorConfig(merge="add"), ["merge", "'sum', 'concat' or 'spec_patch'"]),
        (lambda: SeparatorConfig(roll="soft"), ["roll", "'posterior' or 'binary'"]),
        (lambda: SeparatorConfig(ste=True), ["roll = binary", "set roll=binary or ste=false"]),
        (lambda: LossWeights(separation=-0.5), ["separation is -0.5, below 0", "set it to 0"]),
        (lambda: LossWeights(recognition=0, transcription=0, separation=0), ["every loss weight is 0", "give at least one"]),
        (lambda: InstrumentsConfig(classes=["Piano", "Kazoo"]), ["['Kazoo'] are not in taxonomy jointist-39", "use names from: Piano"]),
        (lambda: RecognizerConfig(d_model=10, heads=4), ["not a multiple", "set heads"]),
    ],
)
def test_config_errors_name_the_problem_and_the_fix(make, words):
    with pytest.raises(ValidationError) as err:
        make()
    for word in words:
        assert word in str(err.value)


def test_instruments_default_to_the_taxonomy():
    assert len(InstrumentsConfig().names) == 39
    assert InstrumentsConfig(classes=["Bass", "Drums"]).names == ("Bass", "Drums")


def test_segment_example_labels_stems_and_rolls():
    from components.data.multitrack.reader import Piece
    from components.data.multitrack.rolls import NoteTable
    from components.data.multitrack.segments import SegmentConfig
    from components.models.jointist.targets import piece_examples, segment_example

    classes = load_classes().classes
    pcm = np.array([[100] * 2000, [200] * 2000, [50] * 2000], np.int16)  # Piano, Bass, Piano at 1 kHz
    notes = NoteTable(
        part=np.array([0, 1, 2], np.int16),
        pitch=np.array([60, 40, 64], np.int16),
        velocity=np.array([90, 90, 90], np.int16),
        start=np.array([0.1, 1.2, 0.3]),
        end=np.array([0.5, 1.8, 0.4]),
    )
    piece = Piece(1, "p", "s", 1000, ["a", "b", "c"], [0, 33, 1], [False] * 3, [""] * 3, ["Piano", "Bass", "Piano"], [""] * 3, pcm, notes, [], np.zeros(0, np.uint8), b"")
    sampler = InstrumentSampler([10] * len(classes), SamplerConfig(present=2, absent=1))
    example = segment_example(piece, classes, 0, 1000, 100.0, sampler, np.random.default_rng(0))
    piano = classes.index("Piano")
    assert np.flatnonzero(example["present"]).tolist() == [piano]  # the bass plays only after 1 s
    np.testing.assert_array_equal(example["mixture"], np.float32(350 / 32768))
    assert example["instrument"][:2].tolist() == [piano, piano] and example["instrument"][2] != piano
    np.testing.assert_array_equal(example["stems"][0], np.float32(150 / 32768))
    assert not example["stems"][2].any() and not example["frames"][2].any() and not example["onsets"][2].any()
    frames, onsets = example["frames"][0], example["onsets"][0]
    assert frames.shape == (88, 101)
    assert np.flatnonzero(frames[60 - 21]).tolist() == list(range(10, 50))
    assert np.flatnonzero(frames[64 - 21]).tolist() == list(range(30, 40))
    assert np.argwhere(onsets).tolist() == [[60 - 21, 10], [64 - 21, 30]]
    # a segment where nothing of the model's classes plays gives no example
    assert segment_example(piece, ("Violin",), 0, 1000, 100.0, InstrumentSampler([1], SamplerConfig()), np.random.default_rng(0)) is None
    # a whole piece: 1 s segments, hop 0.5 s -> starts 0, 500, 1000; every one has a note; the same seed, the same draws
    segmenting = SegmentConfig(seconds=1.0, hop_seconds=0.5)
    examples = piece_examples(piece, classes, segmenting, 100.0, sampler, seed=3)
    assert [int(e["start"]) for e in examples] == [0, 500, 1000]
    assert np.flatnonzero(examples[2]["present"]).tolist() == [classes.index("Bass")]
    again = piece_examples(piece, classes, segmenting, 100.0, sampler, seed=3)
    assert all((a["instrument"] == b["instrument"]).all() for a, b in zip(examples, again))


def test_class_counts_count_pieces_per_class(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from components.data.manifest import FORMAT, write_manifest
    from components.models.jointist.targets import class_counts

    pq.write_table(pa.table({"stem_classes": [["Piano", "Piano", "Bass"], ["Bass"], ["Drums", "Organ"]]}), tmp_path / "train.parquet")
    write_manifest(tmp_path, {"format": FORMAT, "kind": "multitrack", "splits": {"train": {"files": [{"path": "train.parquet"}]}}})
    # a piece counts once per class however many stems it has of it; classes outside the model's are ignored
    assert class_counts(tmp_path, ("Piano", "Bass", "Drums", "Violin")).tolist() == [1, 2, 1, 0]
