"""MusicSlots: shapes, config validation, eq. 1 composition, gradient paths, a one-batch overfit."""

import io

import pytest
import torch
from pydantic import ValidationError

from components.data.features import power_to_db
from components.errors import PartitaError
from components.models.registry import get_family
from components.models.base import DataSpec
from components.models.musicslots import MusicSlotsConfig, compose
from tests.fitting import fit

SPEC = DataSpec(input_shape=(1, 128, 32), pitches=tuple(range(48, 60)), programs=(0, 40, 73), max_notes=4)
TINY = dict(
    encoder_channels=8, encoder_layers=2, encoder_stride=(2, 2), token_size=16, num_slots=3, iters=2, slot_size=16,
    attention_size=16, mlp_hidden=16, decoder_grid=(16, 4), decoder_upsampling=3, decoder_channels=8,
)
FAMILY = get_family("musicslots")


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Tiny tensors gain nothing from intra-op threads, and on a shared 2-core machine they lose a lot."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(**overrides):
    torch.manual_seed(0)
    return FAMILY.build(MusicSlotsConfig(**{**TINY, **overrides}), SPEC)


def synthetic_batch(batch: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """Notes as harmonic stripes decaying in time; the chord is their power sum, in dB like the data."""
    gen = torch.Generator().manual_seed(seed)
    n_valid = torch.randint(2, 5, (batch,), generator=gen)
    valid = torch.arange(4)[None, :] < n_valid[:, None]
    pitch = torch.randint(0, 12, (batch, 4), generator=gen)
    power = torch.full((batch, 4, 128, 32), 1e-10)
    decay = torch.linspace(0, -40, 32)
    for b in range(batch):
        for n in range(int(n_valid[b])):
            base = 4 + 3 * int(pitch[b, n])
            for harmonic in range(1, 4):
                power[b, n, min(base * harmonic, 127)] = 10 ** ((-5 * harmonic + decay) / 10)
    note_db = power_to_db(power.flatten(0, 1).unsqueeze(1)).view(batch, 4, 128, 32)
    chord_db = power_to_db((power * valid[:, :, None, None]).sum(1, keepdim=True))
    return {"chord_db": chord_db, "note_db": note_db, "note_valid": valid, "pitch": pitch * valid, "program": torch.zeros_like(pitch)}


def test_defaults_are_the_paper_model():
    config = MusicSlotsConfig()
    assert (config.encoder_channels, config.encoder_layers, config.encoder_kernel, config.encoder_stride) == (128, 4, 5, (1, 2))
    assert (config.num_slots, config.iters, config.slot_size, config.mlp_hidden) == (7, 3, 128, 128)
    assert (config.decoder_grid, config.decoder_upsampling, config.decoder_channels) == ((8, 2), 4, 128)
    assert (config.mask_norm, config.implicit, config.decoder_input) == ("none", True, "broadcast")
    assert (FAMILY.selection_metric, FAMILY.selection_mode) == ("miou", "max")


def test_paper_model_shapes():
    model = FAMILY.build(MusicSlotsConfig(), SPEC)
    assert model.encoder.pos.grid.shape[:2] == (128, 2)  # Table 6: 256 tokens
    with torch.no_grad():
        out = model(torch.randn(1, 1, 128, 32))
    assert out["recon_db"].shape == (1, 1, 128, 32)
    assert out["slots_db"].shape == out["alphas"].shape == out["decoded_db"].shape == (1, 7, 128, 32)
    assert out["slots"].shape == (1, 7, 128)


@pytest.mark.parametrize("decoder_input", ["broadcast", "linear"])
@pytest.mark.parametrize("mask_norm", ["softmax", "sigmoid", "none"])
def test_small_decoder_reaches_the_input_size(mask_norm, decoder_input):
    model = tiny(mask_norm=mask_norm, decoder_channels=32, decoder_input=decoder_input)
    out = model(synthetic_batch(2)["chord_db"])
    assert out["slots_db"].shape == (2, 3, 128, 32) and out["recon_db"].shape == (2, 1, 128, 32)
    assert model.decoder.deconvs[-1].out_channels == (1 if mask_norm == "none" else 2)


def test_linear_decoder_input_gives_each_grid_cell_its_own_weights():
    """The broadcast grid differs across cells only by the position embedding, the same for every slot; the
    linear input lets a slot's cells differ as the slot says (so two slots can differ in where they have energy)."""
    for decoder_input, position_only in (("broadcast", True), ("linear", False)):
        decoder = tiny(decoder_input=decoder_input).decoder
        grids = []
        decoder.deconvs.register_forward_pre_hook(lambda module, args: grids.append(args[0]))
        with torch.no_grad():
            decoder(torch.randn(2, 16))  # two slots
        grid = grids[0]  # [slots, channels, rows, cols]: what the convolutions receive
        across_cells = grid - grid[..., :1, :1]
        assert grid.shape[-2:] == (16, 4)
        assert torch.allclose(across_cells[0], across_cells[1], atol=1e-6) == position_only


def test_decoder_that_cannot_reach_the_input_size_is_refused():
    with pytest.raises(PartitaError, match=r"gives 64x16.*decoder_grid to \(16, 4\) with model.decoder_upsampling = 3"):
        FAMILY.build(MusicSlotsConfig(**{**TINY, "decoder_grid": (8, 2)}), SPEC)


@pytest.mark.parametrize(
    "bad", [{"mask_norm": "linear"}, {"encoder_kernel": 4}, {"encoder_stride": (0, 2)}, {"num_slots": 0}, {"slots": 7}]
)
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValidationError):
        MusicSlotsConfig(**bad)


def test_one_slot_composes_to_its_own_spectrogram():
    x = power_to_db(torch.rand(2, 1, 16, 8) ** 6)  # a floored dB spectrogram, like the input
    for mask_norm, logits in (("none", None), ("softmax", torch.randn(2, 1, 16, 8)), ("sigmoid", torch.full((2, 1, 16, 8), 40.0))):
        out = compose(x, logits, mask_norm, top_db=80.0)
        torch.testing.assert_close(out["recon_db"], x, atol=1e-4, rtol=0)
        torch.testing.assert_close(out["slots_db"], x, atol=1e-4, rtol=0)


@pytest.mark.parametrize("mask_norm", ["softmax", "sigmoid", "none"])
def test_composition_equals_the_power_domain_formula(mask_norm):
    gen = torch.Generator().manual_seed(0)
    slot_db = torch.rand(2, 4, 16, 8, generator=gen) * 100 - 90
    logits = torch.randn(2, 4, 16, 8, generator=gen) * 3
    weight = {"softmax": logits.softmax(1), "sigmoid": logits.sigmoid(), "none": torch.ones_like(logits)}[mask_norm]
    power = 10 ** (slot_db.double() / 10) * weight.double()
    out = compose(slot_db, logits, mask_norm, top_db=80.0)
    torch.testing.assert_close(out["recon_db"].double(), power_to_db(power.sum(1, keepdim=True)), atol=1e-3, rtol=0)
    per_slot = power_to_db(power.flatten(0, 1).unsqueeze(1)).view_as(slot_db)
    torch.testing.assert_close(out["slots_db"].double(), per_slot, atol=1e-3, rtol=0)
    torch.testing.assert_close(out["alphas"], weight)


def test_mask_norm_semantics():
    zero = torch.zeros(1, 2, 1, 1)
    # no masks: slot powers add, two 0 dB slots give 10 log10(2) dB
    assert compose(zero, None, "none", 80.0)["recon_db"].item() == pytest.approx(3.0103, abs=1e-4)
    # softmax: the weights share the bin; equal logits halve each power, the sum is back at 0 dB
    soft = compose(zero, torch.zeros(1, 2, 1, 1), "softmax", 80.0)
    assert soft["recon_db"].item() == pytest.approx(0.0, abs=1e-5)
    assert soft["alphas"].sum(1).item() == pytest.approx(1.0)
    # sigmoid: each slot is gated on its own; both fully on add like no masks
    sigm = compose(zero, torch.full((1, 2, 1, 1), 30.0), "sigmoid", 80.0)
    assert sigm["recon_db"].item() == pytest.approx(3.0103, abs=1e-4)
    assert sigm["alphas"].sum(1).item() == pytest.approx(2.0)


def test_composition_is_stable_at_extreme_levels():
    slot_db = torch.tensor([[[[500.0]], [[-2000.0]], [[0.0]]]], requires_grad=True)
    logits = torch.tensor([[[[-200.0]], [[50.0]], [[0.0]]]], requires_grad=True)
    out = compose(slot_db, logits, "sigmoid", 80.0)
    out["recon_db"].sum().backward()
    assert torch.isfinite(out["recon_db"]).all() and torch.isfinite(slot_db.grad).all() and torch.isfinite(logits.grad).all()
    # the +500 dB slot is gated to -368.6 dB and the -2000 dB slot is silent: the half-gated 0 dB slot dominates
    assert out["recon_db"].item() == pytest.approx(-3.0103, abs=1e-3)


def test_slot_init_gets_gradient_without_implicit_differentiation():
    model = tiny(implicit=False)
    loss, _ = FAMILY.loss(model, synthetic_batch(2))
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_implicit_differentiation_cuts_the_slot_init_out_of_the_gradient():
    model = tiny(implicit=True)
    loss, _ = FAMILY.loss(model, synthetic_batch(2))
    loss.backward()
    sa = model.slot_attention
    # the first-order implicit gradient only sees the last step: the learned init gets none, so it is frozen
    assert sa.mu.grad is None and sa.log_sigma.grad is None and not sa.mu.requires_grad and not sa.log_sigma.requires_grad
    # and every trainable parameter gets a gradient, which DDP (train.num_workers > 1) waits for
    for name, param in model.named_parameters():
        if name not in ("slot_attention.mu", "slot_attention.log_sigma"):
            assert param.requires_grad and param.grad is not None and param.grad.abs().sum() > 0, name


def test_implicit_differentiation_changes_gradients_not_values():
    chord_db = synthetic_batch(2)["chord_db"]
    implicit, explicit = tiny(implicit=True), tiny(implicit=False)
    torch.manual_seed(1)
    a = implicit(chord_db)
    torch.manual_seed(1)
    b = explicit(chord_db)
    torch.testing.assert_close(a["slots"], b["slots"])
    torch.testing.assert_close(a["recon_db"], b["recon_db"])


def test_overfits_one_batch():
    batch = synthetic_batch(4)
    model = tiny(implicit=False)
    losses = fit(FAMILY, model, batch, steps=30, lr=3e-3)
    assert losses[-1] < losses[0] / 10, losses


def test_evaluate_and_figure():
    model = tiny(mask_norm="sigmoid").eval()
    batches = [synthetic_batch(3, seed=0), synthetic_batch(2, seed=1)]
    metrics = FAMILY.evaluate(model, batches)
    assert set(metrics) == {"note_mse", "miou", "loss"}
    assert 0.0 <= metrics["miou"] <= 1.0 and metrics["note_mse"] > 0 and metrics["loss"] > 0
    fig = FAMILY.figure(model, batches[0])
    assert len(fig.axes) == 2 * 3 * (3 + 2)
    fig.savefig(io.BytesIO(), format="png")


def test_symmetry_diagnostics_tell_the_symmetric_solution_from_a_partition():
    from components.models.musicslots import symmetry_diagnostics

    tokens, num_slots = 12, 3
    shared = torch.full((1, num_slots, tokens), 1 / num_slots)
    same_slots = torch.ones(1, num_slots, 4)
    assert symmetry_diagnostics(shared, same_slots) == pytest.approx({"attention_entropy": 1.0, "slot_similarity": 1.0})
    # each input claimed by one slot, and slots pointing in orthogonal directions
    claimed = torch.nn.functional.one_hot(torch.arange(tokens) % num_slots, num_slots).T[None].float()
    orthogonal = torch.eye(num_slots, 4)[None]
    assert symmetry_diagnostics(claimed, orthogonal) == pytest.approx({"attention_entropy": 0.0, "slot_similarity": 0.0}, abs=1e-6)
    assert symmetry_diagnostics(torch.ones(1, 1, tokens), torch.ones(1, 1, 4)) == {}  # one slot: log K = 0


def test_attention_is_each_inputs_share_over_slots():
    out = tiny()(synthetic_batch(2)["chord_db"])
    attention = out["attention"]
    assert attention.shape[:2] == (2, 3)
    torch.testing.assert_close(attention.sum(1), torch.ones(2, attention.shape[2]))
    logs = FAMILY.loss(tiny(), synthetic_batch(2))[1]
    assert 0 < logs["attention_entropy"] <= 1 and -1 <= logs["slot_similarity"] <= 1


def test_he_init_keeps_the_chords_variation_through_the_encoder():
    """Measured on jsb-multi with the cpu preset's encoder: PyTorch's default init leaves 0.6% of the input's
    variation after four convs (under 1%), under a position embedding of fixed size; He init keeps about a quarter."""
    chord_db = synthetic_batch(8)["chord_db"]

    def variation(init: str) -> float:
        torch.manual_seed(0)
        convs = tiny(encoder_init=init, encoder_layers=4, encoder_stride=(1, 2)).encoder.convs
        with torch.no_grad():
            return float(convs(chord_db / chord_db.std()).std(0).mean())

    assert variation("he") > 5 * variation("torch")


def test_unscaled_logits_are_the_authors_attention():
    assert tiny(attention_logits="unscaled").slot_attention.scale == 1.0
    assert tiny().slot_attention.scale == pytest.approx(16**-0.5)
    with pytest.raises(ValidationError, match="encoder_init"):
        MusicSlotsConfig(encoder_init="xavier")
