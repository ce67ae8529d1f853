"""Cerberus components: the low-rank deep-clustering loss, the three heads and their weights, separation from each head."""

import itertools

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from components.data.multitrack.featurize import ViewFeaturizer
from components.data.multitrack.view import ViewConfig
from components.losses.clustering import deep_clustering_loss, dominant_source, kmeans_masks
from components.models.base import ViewSpec
from components.models.cerberus import CERBERUS, CerberusConfig, CerberusNet, LossWeights, cerberus_losses, note_threshold, weighted_loss

BINS, FRAMES, SOURCES = 9, 6, 2


def naive_dc(v, y, w):
    """||W V V^T W - W Y Y^T W||_F^2 / (sum w)^2 with the N x N affinities built."""
    v, y, w = v.flatten(1, 2), y.flatten(2).transpose(1, 2), w.flatten(1)
    v, y = v * w.unsqueeze(-1), y * w.unsqueeze(-1)
    return ((v @ v.transpose(1, 2) - y @ y.transpose(1, 2)).square().sum((1, 2)) / w.sum(1).square()).mean()


def test_low_rank_deep_clustering_equals_the_naive_affinity_form():
    g = torch.Generator().manual_seed(0)
    v = torch.nn.functional.normalize(torch.rand(3, 5, 4, 6, generator=g, dtype=torch.float64), dim=-1)
    y = dominant_source(torch.rand(3, 3, 5, 4, generator=g, dtype=torch.float64))
    w = (torch.rand(3, 5, 4, generator=g) > 0.3).double()
    torch.testing.assert_close(deep_clustering_loss(v, y, w), naive_dc(v, y, w))
    torch.testing.assert_close(deep_clustering_loss(v, y), naive_dc(v, y, torch.ones(3, 5, 4, dtype=torch.float64)))
    # embeddings equal to the labels reproduce the ideal affinity: zero loss
    assert deep_clustering_loss(y.permute(0, 2, 3, 1), y, w) == pytest.approx(0.0, abs=1e-12)


def small_config(**weights) -> CerberusConfig:
    return CerberusConfig(hidden=4, layers=2, embedding=3, weights=LossWeights(**weights), view=ViewConfig(stft={"n_fft": 16, "hop_length": 4}))


def batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    target_mag = torch.rand(2, SOURCES, BINS, FRAMES, generator=g)
    mix_mag = target_mag.sum(1)
    return {
        "mix_mag": mix_mag,
        "target_mag": target_mag,
        "target_psa": target_mag * 0.9,
        "rolls": torch.randint(0, 128, (2, SOURCES, 88, FRAMES), generator=g, dtype=torch.uint8),
    }


HEAD_WEIGHTS = {"dc": "dc", "mi": "mi.linear", "tr": "tr"}


@pytest.mark.parametrize("off", ["dc", "mi", "tr"])
def test_a_zero_weight_removes_that_heads_gradient(off):
    config = small_config(**{"dc": 1.0, "mi": 1.0, "tr": 1.0, off: 0.0})
    torch.manual_seed(0)
    net = CerberusNet(config, BINS, SOURCES)
    weighted_loss(cerberus_losses(net(batch()["mix_mag"]), batch(), config), config.weights).backward()
    grads = {head: net.get_submodule(path).weight.grad for head, path in HEAD_WEIGHTS.items()}
    assert grads[off] is None
    assert all(grads[head].abs().sum() > 0 for head in grads if head != off)
    assert net.stack.lstm.weight_ih_l0.grad.abs().sum() > 0


def test_every_weighting_starts_from_the_same_weights():
    states = []
    for weights in ({"dc": 1, "mi": 0, "tr": 0}, {"dc": 0.1, "mi": 0.1, "tr": 0.8}, {"dc": 0, "mi": 0.2, "tr": 0.8}):
        torch.manual_seed(7)
        states.append(CerberusNet(small_config(**weights), BINS, SOURCES).state_dict())
    for a, b in itertools.pairwise(states):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_transcription_target_is_the_roll_above_velocity_30():
    config = small_config()
    data = batch()
    target = (data["rolls"] > 30).float()
    output = CerberusNet(config, BINS, SOURCES)(data["mix_mag"])
    assert cerberus_losses(output._replace(rolls=target), data, config)["tr"] == 0
    assert cerberus_losses(output._replace(rolls=(data["rolls"] >= 30).float()), data, config)["tr"] > 0  # 30 itself is not a note


def test_unit_embeddings_softmax_masks_and_masks_that_sum_to_one_reconstruct_the_mixture():
    view = ViewConfig(stft={"n_fft": 64, "hop_length": 16})
    featurizer = ViewFeaturizer(view, 16000)
    mixture = torch.randn(2, 800, generator=torch.Generator().manual_seed(2))
    spec = featurizer.stft(mixture)
    config = small_config()
    config.view = view
    torch.manual_seed(0)
    output = CerberusNet(config, view.bins, 3)(spec.abs())
    torch.testing.assert_close(output.embedding.norm(dim=-1), torch.ones(output.embedding.shape[:-1]))
    torch.testing.assert_close(output.masks.sum(1), torch.ones_like(spec.abs()))
    for masks in (output.masks, kmeans_masks(output.embedding, 3)):  # the MI head's masks and the DC head's clusters
        estimates = featurizer.istft(masks.detach() * spec.unsqueeze(1), mixture.shape[-1])  # mixture phase
        assert estimates.shape == (2, 3, 800)
        torch.testing.assert_close(estimates.sum(1), mixture, atol=1e-4, rtol=1e-4)


def test_kmeans_on_embeddings_recovers_the_dominant_sources():
    g = torch.Generator().manual_seed(3)
    labels = dominant_source(torch.rand(2, 3, BINS, FRAMES, generator=g))
    centres = torch.eye(3) * 2
    embedding = torch.einsum("bsft,sd->bftd", labels, centres) + 0.05 * torch.randn(2, BINS, FRAMES, 3, generator=g)
    masks = kmeans_masks(embedding, 3)
    assert torch.equal(masks.sum(1), torch.ones(2, BINS, FRAMES))
    for example in range(2):  # the same partition, clusters in any order
        assert any(torch.equal(masks[example][list(order)], labels[example]) for order in itertools.permutations(range(3)))


def test_the_family_trains_and_scores_both_heads_and_the_transcription():
    view = ViewConfig(segment={"seconds": 0.5, "hop_seconds": 0.5}, sources=2, classes=["Piano", "Drums"], targets=["phase_sensitive", "magnitude"], conditioning=["rolls"], stft={"n_fft": 64, "hop_length": 32})
    config = CerberusConfig(hidden=4, layers=1, embedding=3, view=view)
    featurizer = ViewFeaturizer(view, 1000, keep_waveforms=True)
    g = torch.Generator().manual_seed(4)
    sources = torch.randn(3, 2, 500, generator=g)
    rolls = torch.zeros(3, 2, 88, view.frames(1000), dtype=torch.uint8)
    rolls[:, 0, 40, 2:9] = 100  # one piano note per example, and a drum hit the TR head's 0.1 threshold may catch
    rolls[:, 1, 15, 4:6] = 90
    batch = featurizer({"mixture": sources.sum(1), "sources": sources, "rolls": rolls})
    torch.manual_seed(0)
    model = CERBERUS.build(config, ViewSpec(sample_rate=1000, classes=("Piano", "Drums")))
    loss, logs = CERBERUS.loss(model, batch)
    loss.backward()
    wrapped = torch.nn.Module()  # what DDP hands the loss with several workers: a forwarding wrapper, no config
    wrapped.module, wrapped.forward = model, model.forward
    assert CERBERUS.loss(wrapped, batch)[1]["loss"] == pytest.approx(logs["loss"])
    assert set(logs) == {"loss", "loss_dc", "loss_mi", "loss_tr"}
    assert logs["loss"] == pytest.approx(0.1 * logs["loss_dc"] + 0.1 * logs["loss_mi"] + 0.8 * logs["loss_tr"], rel=1e-5)
    with torch.no_grad():
        metrics = CERBERUS.evaluate(model.eval(), [batch])
    assert all(np.isfinite(value) for value in metrics.values()), metrics
    assert {"loss", "loss_dc", "loss_mi", "loss_tr", "sdr", "si_sdri", "dc_sdr", "note_precision", "note_recall", "note_f1"} <= set(metrics)
    assert 0 <= metrics["note_f1"] <= 1 and {"sdr_piano", "note_f1_drums"} <= set(metrics)
    # per source SI-SDRi (Table 4.1's MI+TR row): with every source scored, their mean is the overall one
    assert metrics["si_sdri"] == pytest.approx((metrics["si_sdri_piano"] + metrics["si_sdri_drums"]) / 2, rel=1e-5)
    assert metrics["frame_ap_chance"] == pytest.approx(float((rolls > 30).float().mean()))  # the reference's positive rate
    assert metrics["frame_ap_chance_drums"] == pytest.approx(float((rolls[:, 1] > 30).float().mean()))  # and per source
    figure = CERBERUS.figure(model, batch)
    assert len(figure.axes) == 3 * 4 and figure.axes[4].get_title() == "Piano: MI mask"


def test_drums_are_transcribed_at_a_lower_threshold():
    assert note_threshold("Drums") == 0.1 and note_threshold("Piano") == 0.8


def test_weights_must_be_non_negative_and_not_all_zero():
    with pytest.raises(ValidationError, match="all loss weights are 0.*give at least one of dc, mi, tr a positive weight"):
        LossWeights(dc=0, mi=0, tr=0)
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        LossWeights(dc=-0.1)


def test_the_family_consumes_what_the_view_makes():
    """Examples cut, mixed and featurised by issue 11's example makers from a tiny piece (no Ray) train and score."""
    from components.data.multitrack.examples import piece_examples, stack
    from tests.test_multitrack_examples import RATE, tiny_piece

    view = ViewConfig(segment={"seconds": 5.0, "hop_seconds": 5.0}, sources=2, targets=["phase_sensitive", "magnitude"], conditioning=["rolls"], stft={"n_fft": 256, "hop_length": 128})
    examples = stack(piece_examples(tiny_piece(), view, seed=0))
    batch = ViewFeaturizer(view, RATE, keep_waveforms=True)({key: torch.from_numpy(np.ascontiguousarray(value)) for key, value in examples.items()})
    assert batch["rolls"].shape[-1] == batch["mix_mag"].shape[-1]  # rolls at the STFT frame rate, as the TR head predicts
    config = CerberusConfig(hidden=4, layers=1, embedding=3, view=view)
    torch.manual_seed(0)
    model = CERBERUS.build(config, ViewSpec(sample_rate=RATE, classes=()))
    loss, _ = CERBERUS.loss(model, batch)
    loss.backward()
    with torch.no_grad():
        metrics = CERBERUS.evaluate(model.eval(), [batch])
    assert np.isfinite(loss.item()) and all(np.isfinite(metrics[name]) for name in ("loss", "sdr", "si_sdri", "dc_sdr", "note_f1"))


def test_apply_writes_a_wav_and_a_midi_per_source_named_by_class():
    rate, samples = 8000, 4001
    config = CerberusConfig(hidden=4, layers=1, embedding=3, view=ViewConfig(classes=["Piano", "Drums"], stft={"n_fft": 64, "hop_length": 32}))
    torch.manual_seed(0)
    model = CERBERUS.build(config, ViewSpec(sample_rate=rate, classes=())).eval()
    # the TR head made to hear middle C on the piano all along and nothing on the drums
    with torch.no_grad():
        model.net.tr.weight.zero_()
        model.net.tr.bias.fill_(-20.0)
        model.net.tr.bias[60 - 21] = 20.0  # source 0 (Piano), key of MIDI 60
    audio = 0.3 * torch.sin(2 * torch.pi * 261.6 * torch.arange(samples) / rate)
    with torch.no_grad():
        files = CERBERUS.apply(model, audio, ViewSpec(sample_rate=rate, classes=()))
    assert sorted(files) == ["drums.mid", "drums.wav", "piano.mid", "piano.wav"]
    # softmax masks sum to one: the two stems add back up to the recording, at its length
    assert files["piano.wav"].shape == (samples,)
    np.testing.assert_allclose(files["piano.wav"] + files["drums.wav"], audio.numpy(), atol=1e-4)
    piano, drums = files["piano.mid"].instruments[0], files["drums.mid"].instruments[0]
    assert (piano.name, piano.program, piano.is_drum) == ("Piano", 0, False) and drums.is_drum
    assert [n.pitch for n in piano.notes] == [60] and piano.notes[0].end == pytest.approx(samples / rate, abs=2 * 32 / rate)
    assert drums.notes == []


def test_apply_refuses_a_run_with_unnamed_sources():
    from components.errors import PartitaError

    config = CerberusConfig(hidden=4, layers=1, embedding=3, view=ViewConfig(classes=[], stft={"n_fft": 64, "hop_length": 32}))
    model = CERBERUS.build(config, ViewSpec(sample_rate=8000, classes=())).eval()
    with pytest.raises(PartitaError, match="unnamed sources.*fix: apply a run trained with model.view.classes"):
        CERBERUS.apply(model, torch.zeros(800), ViewSpec(sample_rate=8000, classes=()))
