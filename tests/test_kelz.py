"""Kelz and Widmer: the U-Net, the batched demixing solver, thresholds, snippets, SSIM and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.optimize import nnls

from components.data.manifest import FORMAT, MANIFEST
from components.data.pianos.snippets import PianoSnippets, SnippetConfig, SnippetSplit, snippet_starts
from components.errors import PartitaError
from components.metrics.similarity import ssim
from components.models.kelz.demixing import (
    DemixConfig,
    Problem,
    add_regulariser_gradient,
    decompose,
    objective,
    regularisers,
    solve,
)
from components.models.kelz.evaluation import fit_input_thresholds
from components.models.unet import UNet

BINS, NOTES = 64, 12


def random_problem(frames: int = 120, seed: int = 0, noise: float = 0.05):
    rng = np.random.default_rng(seed)
    dictionary = rng.random((BINS, NOTES))
    truth = np.where(rng.random((NOTES, frames)) < 0.2, rng.random((NOTES, frames)) * 2, 0.0)
    return dictionary, dictionary @ truth + noise * rng.random((BINS, frames))


def test_unet_has_the_papers_parameter_count():
    assert sum(p.numel() for p in UNet().parameters()) == 13_390_209


@pytest.mark.parametrize("shape", [(37, 53), (16, 16), (5, 7)])
def test_unet_keeps_odd_shapes(shape):
    model = UNet(1, 2, channels=(4, 8, 8)).eval()
    assert model(torch.randn(2, 1, *shape)).shape == (2, 2, *shape)


def test_solver_keeps_activations_non_negative():
    dictionary, spectrogram = random_problem()
    config = DemixConfig(lambda_h=1.0, lambda_t=1.0, steps=50, lr=0.1, init="uniform")
    activations = decompose(dictionary, [spectrogram, spectrogram[:, :40]], config)
    assert [a.shape for a in activations] == [(NOTES, 120), (NOTES, 40)]
    assert min(a.min() for a in activations) >= 0 and max(a.max() for a in activations) > 0


def test_without_regularisers_the_objective_matches_nnls_per_frame():
    dictionary, spectrogram = random_problem(frames=200)
    (activations,) = decompose(dictionary, [spectrogram], DemixConfig(lambda_h=0, lambda_t=0, steps=300, lr=1e-2))
    ours = ((dictionary @ activations - spectrogram) ** 2).sum(axis=0)
    reference = np.array([nnls(dictionary, frame)[1] ** 2 for frame in spectrogram.T])
    assert ours.sum() <= reference.sum() * 1.001
    # each frame's excess in units of its energy (the README's measure): a ratio to a frame's optimum,
    # often near 0, measures Adam's constant-size steps and differs between CPUs (1.099 on one, < 1.01 on another)
    excess = (ours - reference) / (spectrogram**2).sum(axis=0)
    assert excess.max() < 1e-4, excess.max()


def test_quiet_frames_reach_their_optimum_as_loud_ones_do():
    """Every other frame 80 dB down: with steps in each frame's own units the defaults (50 steps, lr 0.1) bring
    every frame within 1% of its energy of the optimum; in absolute units Adam's ~lr-sized steps swamp the quiet ones."""
    dictionary, spectrogram = random_problem(frames=100)
    spectrogram = spectrogram * np.where(np.arange(100) % 2, 1.0, 1e-4)
    optimum = np.array([nnls(dictionary, frame)[1] ** 2 for frame in spectrogram.T])
    energy = (spectrogram**2).sum(axis=0)

    def worst_excess(frame_relative_steps: bool) -> float:
        (activations,) = decompose(dictionary, [spectrogram], DemixConfig(lambda_h=0, lambda_t=0, frame_relative_steps=frame_relative_steps))
        return float(((((dictionary @ activations - spectrogram) ** 2).sum(axis=0) - optimum) / energy).max())

    assert worst_excess(True) <= 0.01
    assert worst_excess(False) > 0.1


def test_a_dictionary_column_decomposes_into_its_note():
    dictionary, _ = random_problem()
    note = 7
    spectrogram = np.repeat(dictionary[:, note : note + 1], 30, axis=1)
    (activations,) = decompose(dictionary, [spectrogram], DemixConfig(steps=300))
    assert (activations.argmax(axis=0) == note).all()
    share = activations[note].sum() / activations.sum()
    assert share > 0.98 and np.allclose(activations[note], 1.0, atol=0.05)


def test_the_temporal_term_smooths():
    dictionary, spectrogram = random_problem(frames=150, noise=0.5)

    def change(lambda_t: float) -> float:
        (activations,) = decompose(dictionary, [spectrogram], DemixConfig(lambda_h=0, lambda_t=lambda_t, steps=300))
        return float(np.abs(np.diff(activations, axis=1)).mean())

    assert change(1e3) < 0.5 * change(0.0)


def test_closed_form_gradients_equal_autograd():
    generator = torch.Generator().manual_seed(0)
    activations = torch.rand(2, NOTES, 30, generator=generator, dtype=torch.float64)
    activations[:, :, 4] = 0  # a silent frame: the Hoyer term's 0/0 corner
    valid = torch.ones(2, 30, dtype=torch.bool)
    valid[1, 22:] = False
    activations[1, :, 22:] = 0
    config = DemixConfig(lambda_h=0.3, lambda_t=0.7, lags=3)
    leaf = activations.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(regularisers(leaf, valid, config).sum(), leaf)
    ours = torch.zeros_like(activations)
    add_regulariser_gradient(activations, valid, config, ours)
    torch.testing.assert_close(ours * valid[:, None], expected * valid[:, None])


def test_pieces_solved_together_get_their_solo_answers():
    dictionary, spectrogram = random_problem(frames=80)
    config = DemixConfig(steps=40, lambda_h=0.1, lambda_t=0.1)
    d, v = torch.tensor(dictionary, dtype=torch.float32), torch.tensor(spectrogram, dtype=torch.float32)
    together = solve(d, Problem.pad([v, v[:, :50]]), config)
    alone = solve(d, Problem.pad([v[:, :50]]), config)
    torch.testing.assert_close(together[1, :, :50], alone[0], rtol=1e-4, atol=1e-5)
    assert (together[1, :, 50:] == 0).all()
    values = objective(d, Problem.pad([v, v[:, :50]]), together, config)
    assert values.shape == (2,) and (values > 0).all()


def test_thresholds_come_from_train_and_valid_only():
    rng = np.random.default_rng(0)

    def pieces(n):
        rolls = [rng.random((88, 40)) < 0.1 for _ in range(n)]
        return [(roll * rng.uniform(0.5, 1.5, roll.shape) + rng.random(roll.shape) * 0.6, roll) for roll in rolls]

    decompositions = {"train": pieces(3), "valid": pieces(2), "test": pieces(2)}
    thresholds = fit_input_thresholds(decompositions, candidates=50)
    changed_test = dict(decompositions, test=[(a * 10 + 5, r) for a, r in decompositions["test"]])
    np.testing.assert_array_equal(fit_input_thresholds(changed_test, candidates=50), thresholds)
    changed_train = dict(decompositions, train=[(a * 10 + 5, r) for a, r in decompositions["train"]])
    assert not np.array_equal(fit_input_thresholds(changed_train, candidates=50), thresholds)


def test_snippets_are_aligned_and_cover_each_piece():
    assert snippet_starts(600, 256, 128).tolist() == [0, 128, 256]
    assert snippet_starts(100, 256, 128).tolist() == [0]  # shorter than a snippet: one, padded
    source = torch.arange(2 * 600, dtype=torch.float16).reshape(2, 600)
    split = SnippetSplit([source, source[:, :100]], [source + 1, source[:, :100] + 1], SnippetConfig(frames=256, hop=128))
    assert len(split) == 4
    batch = split.batch(torch.tensor([1, 3]))
    assert batch["source"].shape == batch["target"].shape == (2, 1, 2, 256)
    difference = batch["target"] - batch["source"]  # each target is its source + 1, padding aside
    assert (difference[0] == 1).all() and (difference[1, ..., :100] == 1).all() and (difference[1, ..., 100:] == 0).all()
    assert batch["source"][0, 0, 0, 0] == 128 and (batch["source"][1, ..., 100:] == 0).all()
    assert sum(len(b["source"]) for b in split.batches(3)) == 4


def test_ssim_is_one_for_identical_images_and_falls_with_noise():
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(64, 80, generator=generator)
    noisy = image + 0.3 * torch.randn(64, 80, generator=generator)
    assert ssim(image, image) == pytest.approx(1.0)
    assert ssim(noisy, image) < 0.9 and ssim(noisy, image) == pytest.approx(ssim(image, noisy), rel=0.05)


def test_a_dictionary_of_the_wrong_size_is_refused():
    dictionary, spectrogram = random_problem()
    with pytest.raises(PartitaError, match="mel bins; fix: use a dictionary of 64"):
        decompose(dictionary[:40], [spectrogram], DemixConfig())


def test_a_negative_lambda_is_refused_with_its_key():
    from orchestration.config import load_config

    with pytest.raises(PartitaError, match=r"model.demix.lambda_t = -1.*fix: set an allowed value"):
        load_config(["experiments/configs/kelz/smoke.yaml"], ["model.demix.lambda_t=-1"])


def test_a_chord_set_is_refused(tmp_path):
    (tmp_path / MANIFEST).write_text(json.dumps({"format": FORMAT, "kind": "chords"}))
    with pytest.raises(PartitaError, match="needs a piano-domains data set.*fix: pass --dataset piano-domains"):
        PianoSnippets(tmp_path, SnippetConfig())


@pytest.mark.parametrize(
    ("preset", "dataset", "message"),
    [
        ("experiments/configs/kelz/smoke.yaml", "jsb-multi", "kelz cannot train on jsb-multi; it needs the piano-domains set: pass --dataset piano-domains"),
        ("experiments/configs/kelz/smoke.yaml", "slakh-like", "kelz cannot train on slakh-like"),
        ("experiments/configs/musicslots/smoke.yaml", "piano-domains", "musicslots cannot train on piano-domains"),
    ],
)
def test_data_sets_of_other_kinds_are_refused_at_load(preset, dataset, message):
    from orchestration.config import load_config

    with pytest.raises(PartitaError, match=message):
        load_config([preset], [f"data.name={dataset}"])


def test_logged_metric_names_are_ones_mlflow_accepts_and_read_back_as_rows():
    from mlflow.utils.validation import _validate_metric_name

    from components.models.kelz.evaluation import ROW_FIELDS, TwoStageResult, rows_from_metrics

    rows = [{"split": "test", "input": name, **{k: 0.5 for k in ROW_FIELDS}} for name in ("S", "T", "T'")]
    metrics = TwoStageResult(rows, {}, {}, {}).metrics()
    for name in metrics:
        _validate_metric_name(name)  # raises on the apostrophe of T'
    assert sorted(rows_from_metrics(metrics), key=lambda r: r["input"]) == sorted(rows, key=lambda r: r["input"])


class IdentityDenoiser(torch.nn.Module):
    """Stands in for a U-Net that maps V_S onto itself, so the apply step's stage 2 is tested alone."""

    def __init__(self):
        super().__init__()
        self.device_marker = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def sine_transcriber(threshold: float = 0.5):
    """A PianoTranscriber at 16 kHz whose D_T column k is the mean mel of a unit sine at key 21 + k."""
    from components.data.pianos.recipe import PianoDomainsRecipe
    from components.data.pianos.render import mel_transform
    from components.models.kelz.family import PianoTranscriber

    recipe = PianoDomainsRecipe(sample_rate=16000, n_fft=2048, hop_length=256, n_mels=128)
    mel = mel_transform(recipe)
    seconds = torch.arange(16000) / 16000
    columns = [mel(0.3 * torch.sin(2 * torch.pi * 440 * 2 ** ((key - 69) / 12) * seconds)).mean(dim=1) for key in range(21, 109)]
    demix = DemixConfig(lambda_h=0.0, lambda_t=0.0, steps=300)
    return PianoTranscriber(recipe, torch.stack(columns, dim=1).numpy(), np.full(88, threshold, np.float32), demix)


def test_applying_a_run_transcribes_a_recording_of_its_dictionarys_notes():
    """A4 then C5 (sines, as in D_T) come back as MIDI notes 69 then 72 at their times: mel, demixing, thresholds, MIDI."""
    from components.models.kelz.family import KELZ

    transcriber = sine_transcriber()
    seconds = torch.arange(16000) / 16000
    recording = 0.3 * torch.cat([torch.sin(2 * torch.pi * 440 * seconds), torch.sin(2 * torch.pi * 523.2511 * seconds)])
    outputs = KELZ.apply(IdentityDenoiser(), recording, transcriber)
    assert set(outputs) == {"transcription.mid", "denoised.png"}
    notes = [(n.pitch, n.start, n.end) for track in outputs["transcription.mid"].instruments for n in track.notes]
    assert [pitch for pitch, *_ in notes] == [69, 72]
    (_, a_start, a_end), (_, c_start, c_end) = notes
    assert a_start < 0.05 and abs(a_end - 1.0) < 0.1 and abs(c_start - 1.0) < 0.1 and abs(c_end - 2.0) < 0.1


def test_the_apply_state_round_trips_through_json_and_a_denoiser_alone_is_refused():
    from components.models.kelz.family import KELZ, PianoTranscriber

    transcriber = sine_transcriber(threshold=0.25)
    back = PianoTranscriber.from_json(json.loads(json.dumps(transcriber.to_json())))
    assert back.recipe == transcriber.recipe and back.demix == transcriber.demix and back.sample_rate == 16000
    assert np.array_equal(back.dictionary, transcriber.dictionary) and np.array_equal(back.thresholds, transcriber.thresholds)
    read = KELZ.applied_spec(None, lambda path: transcriber.to_json() if path == "apply/kelz.json" else None)
    assert np.array_equal(read.thresholds, transcriber.thresholds) and read.recipe == transcriber.recipe
    with pytest.raises(PartitaError, match="no demixing thresholds") as err:
        KELZ.applied_spec(None, lambda path: None)
    assert "kelz_two_stage.py" in err.value.fix
