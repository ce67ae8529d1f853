"""The baselines: AutoEncoder, VAE and supervised CNN (paper Tables 8-10), and the multi-hot targets."""

import io
import math

import pytest
import torch
from pydantic import ValidationError

from components.errors import PartitaError
from components.models.registry import get_family
from components.models.autoencoders import (
    AutoencoderConfig,
    SupervisedCNNConfig,
    VAEConfig,
    chord_accuracy,
    gaussian_kl,
    multi_hot,
    notes_from_multi_hot,
)
from components.models.base import DataSpec
from tests.fitting import fit

SPEC = DataSpec(input_shape=(1, 128, 32), pitches=tuple(range(48, 60)), programs=(0, 40, 73), max_notes=4)
TINY = dict(channels=8, layers=4, kernel=3)


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Tiny tensors gain nothing from intra-op threads, and on a shared 2-core machine they lose a lot."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def build(family: str, **fields):
    torch.manual_seed(0)
    fam = get_family(family)
    return fam, fam.build(fam.config_class(**fields), SPEC)


def batch(size: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    valid = torch.arange(4)[None, :] < torch.randint(2, 5, (size,), generator=gen)[:, None]
    # a few loud mel rows (the notes' partials) over a -80 dB floor
    chord_db = torch.full((size, 1, 128, 32), -80.0)
    for b in range(size):
        chord_db[b, 0, torch.randint(0, 128, (6,), generator=gen)] = torch.linspace(-5.0, -40.0, 32)
    return {
        "chord_db": chord_db,
        "note_db": torch.full((size, 4, 128, 32), -100.0),
        "note_valid": valid,
        "pitch": torch.randint(0, SPEC.n_pitches, (size, 4), generator=gen) * valid,
        "program": torch.randint(0, SPEC.n_programs, (size, 4), generator=gen) * valid,
    }


def test_defaults_are_the_paper_layouts():
    for config in (AutoencoderConfig(), VAEConfig(), SupervisedCNNConfig()):
        assert (config.channels, config.layers, config.kernel) == (128, 4, 5)
    assert AutoencoderConfig().latent_size == VAEConfig().latent_size == SupervisedCNNConfig().hidden_size == 128
    assert VAEConfig().beta == 1.0
    for name in ("autoencoder", "vae"):
        _, model = build(name)
        assert model.encoder.out_size == 2048 and model.encoder.grid == (8, 2)  # Table 8: 8 x 2 x 128
        x = torch.randn(1, 1, 128, 32)
        with torch.no_grad():
            assert model(x)["recon_db"].shape == (1, 1, 128, 32)
            assert model.encode(x).shape == (1, 128)
    _, cnn = build("supervised_cnn")
    with torch.no_grad():
        assert cnn(torch.randn(1, 1, 128, 32)).shape == (1, 3 * 12)
        assert cnn.encode(torch.randn(1, 1, 128, 32)).shape == (1, 128)


def test_selection_metrics():
    assert (get_family("autoencoder").selection_metric, get_family("autoencoder").selection_mode) == ("loss", "min")
    assert (get_family("vae").selection_metric, get_family("vae").selection_mode) == ("loss", "min")
    assert (get_family("supervised_cnn").selection_metric, get_family("supervised_cnn").selection_mode) == ("chord_accuracy", "max")


@pytest.mark.parametrize("beta", [0.0, -1.0])
def test_vae_refuses_non_positive_beta(beta):
    with pytest.raises(ValidationError, match="beta must be > 0"):
        VAEConfig(beta=beta)
    assert VAEConfig(beta=0.5).beta == 0.5


def test_too_many_layers_for_the_input_is_refused():
    with pytest.raises(PartitaError, match="at most 5"):
        build("autoencoder", **{**TINY, "layers": 6})
    with pytest.raises(ValidationError):
        AutoencoderConfig(kernel=4)


def test_gaussian_kl_known_values():
    zeros = torch.zeros(3, 4)
    assert gaussian_kl(zeros, zeros).item() == 0.0
    assert gaussian_kl(torch.ones(3, 4), zeros).item() == pytest.approx(4 * 0.5)
    assert gaussian_kl(zeros, torch.full((3, 4), math.log(2.0))).item() == pytest.approx(4 * 0.5 * (1 - math.log(2.0)))


def test_vae_loss_is_mse_plus_beta_kl_and_eval_is_deterministic():
    fam, model = build("vae", **TINY, latent_size=8, beta=0.5)
    x = batch()["chord_db"]
    model.eval()
    terms = fam.terms(model, x)
    assert terms["loss"].item() == pytest.approx(terms["recon_mse"].item() + 0.5 * terms["kl"].item(), rel=1e-6)
    torch.testing.assert_close(model(x)["recon_db"], model(x)["recon_db"])
    model.train()
    assert not torch.equal(model(x)["recon_db"], model(x)["recon_db"])  # sampled latents


@pytest.mark.parametrize("family", ["autoencoder", "vae", "supervised_cnn"])
def test_every_parameter_gets_gradient(family):
    fam, model = build(family, **TINY, **({"hidden_size": 8} if family == "supervised_cnn" else {"latent_size": 8}))
    loss, logs = fam.loss(model, batch(2))
    loss.backward()
    assert logs["loss"] == pytest.approx(loss.item())
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_autoencoder_overfits_one_batch():
    fam, model = build("autoencoder", **{**TINY, "layers": 3}, latent_size=16)
    data = batch(4)
    losses = fit(fam, model, data, steps=60, lr=3e-3)
    assert losses[-1] < losses[0] / 10, losses


def test_supervised_cnn_learns_one_batch():
    fam, model = build("supervised_cnn", **TINY, hidden_size=32)
    data = batch(4)
    fit(fam, model, data, steps=60, lr=3e-3)
    model.eval()
    assert fam.evaluate(model, [data])["chord_accuracy"] == 1.0


def test_evaluate_reports_the_documented_metrics():
    fam, model = build("vae", **TINY, latent_size=8)
    metrics = fam.evaluate(model.eval(), [batch(3), batch(2, seed=1)])
    assert set(metrics) == {"loss", "recon_mse", "kl"}
    fam, model = build("autoencoder", **TINY, latent_size=8)
    assert set(fam.evaluate(model.eval(), [batch(3)])) == {"loss", "recon_mse"}
    fig = fam.figure(model, batch(2))
    fig.savefig(io.BytesIO(), format="png")
    fam, model = build("supervised_cnn", **TINY, hidden_size=8)
    metrics = fam.evaluate(model.eval(), [batch(3), batch(2, seed=1)])
    assert set(metrics) == {"chord_accuracy", "loss"} and 0.0 <= metrics["chord_accuracy"] <= 1.0


def test_multi_hot_known_value_and_padding():
    pitch = torch.tensor([[0, 5, 0, 0]])
    program = torch.tensor([[2, 1, 0, 0]])
    valid = torch.tensor([[True, True, False, False]])
    target = multi_hot(pitch, program, valid, n_pitches=6, n_programs=3)
    # bit = program * n_pitches + pitch; padding rows (pitch 0, program 0) must not set bit 0
    assert target.shape == (1, 18)
    assert target[0].nonzero().flatten().tolist() == [11, 12]


def test_multi_hot_round_trip():
    gen = torch.Generator().manual_seed(0)
    target = (torch.rand(16, 3 * 12, generator=gen) < 0.1).float()
    target[:, 0] = 1.0  # (pitch 0, program 0), the padding index, is a real note here
    chords = notes_from_multi_hot(target, n_pitches=12)
    # back to padded (pitch, program) rows, then to multi-hot again
    rows = max(len(chord) for chord in chords)
    pitch = torch.zeros(16, rows, dtype=torch.long)
    program = torch.zeros(16, rows, dtype=torch.long)
    valid = torch.zeros(16, rows, dtype=torch.bool)
    for b, chord in enumerate(chords):
        for i, (p, g) in enumerate(sorted(chord)):
            pitch[b, i], program[b, i], valid[b, i] = p, g, True
    torch.testing.assert_close(multi_hot(pitch, program, valid, n_pitches=12, n_programs=3), target)


def test_chord_accuracy_needs_every_bit_right():
    target = torch.tensor([[1.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    logits = torch.tensor([[2.0, -1.0, 0.0], [2.0, 0.5, -3.0], [-1.0, -1.0, -1.0]])
    # sigmoid(0) = 0.5 counts as on; one extra bit fails the chord
    assert chord_accuracy(logits, target).tolist() == [1.0, 0.0, 1.0]


def test_table_2_sources_keep_their_presets_and_take_the_command_lines_schedule():
    """Each source of the property-prediction sweep trains on its family's preset; `--set train.steps=...` must
    still shorten all of them (a variant's train section replaces the base config's)."""
    from orchestration.experiment import load_experiment
    from tests.entry_points import script_module

    script = script_module("experiments/property_prediction.py")
    args = script.build_parser().parse_args(["--preset", "cpu", "--set", "train.steps=120", "--set", "probe.steps=30", "--set", "train.lr=2e-4"])
    config = load_experiment(args, "musicslots", script.CONFIGS / "property_prediction.yaml", [f"sweep.variants={script.json.dumps(script.variants('cpu', 0.5, args.set))}"])
    from orchestration.sweep import trial_overrides

    trials = {name: config.with_values(trial_overrides(config, {"variant": name})) for name in config.sweep.variants}
    assert set(trials) == {"supervised_cnn", "autoencoder", "vae", "beta_vae", "musicslots_none"}
    assert {(t.train.steps, t.probe.steps, t.train.lr) for t in trials.values()} == {(120, 30, 2e-4)}
    assert trials["beta_vae"].model.beta == 0.5 and trials["vae"].model.beta == 1.0
    assert trials["supervised_cnn"].train.batch_size == 32 and trials["musicslots_none"].train.batch_size == 16  # their own presets otherwise
    # the printed table states the schedules the sources ran, not the base family's, and ranks by the probe's accuracy
    from orchestration.experiment import scale_note

    assert scale_note(config, "cpu") == (
        "preset cpu: 120 steps, batch 32 (supervised_cnn, autoencoder, vae, beta_vae); 120 steps, batch 16 (musicslots_none), 5 seeds"
    )
    assert (config.sweep.metric, config.sweep.mode) == ("val/chord_accuracy", "max")
