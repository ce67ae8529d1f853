import warnings

import fast_bss_eval
import numpy as np
import pytest
import torch

from components.metrics.separation import MAX_DB, aggregate, sdr, si_sdr, si_sdr_improvement, summarise


@pytest.fixture
def no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def test_sdr_hand_computed():
    reference = np.array([[3.0, 4.0], [1.0, 0.0]])
    estimate = np.array([[3.0, 3.0], [0.5, 0.5]])
    # ||s||^2 = 25 with error energy 1; ||s||^2 = 1 with error energy 0.5.
    np.testing.assert_allclose(sdr(estimate, reference), [10 * np.log10(25), 10 * np.log10(2)])


def test_sdr_is_not_scale_invariant_but_si_sdr_is():
    rng = np.random.default_rng(0)
    reference = rng.standard_normal(800)
    estimate = reference + 0.3 * rng.standard_normal(800)
    assert sdr(2 * estimate, reference) < sdr(estimate, reference) - 3
    np.testing.assert_allclose(si_sdr(2 * estimate, reference), si_sdr(estimate, reference))
    np.testing.assert_allclose(si_sdr(estimate, -5 * reference), si_sdr(estimate, reference))


def test_si_sdr_matches_fast_bss_eval_batched():
    rng = np.random.default_rng(1)
    reference = rng.standard_normal((2, 3, 4000))
    estimate = 0.7 * reference + rng.uniform(0.1, 2.0, (2, 3, 1)) * rng.standard_normal((2, 3, 4000))
    expected = fast_bss_eval.si_sdr(reference[..., None, :], estimate[..., None, :])[..., 0]
    assert si_sdr(estimate, reference).shape == (2, 3)
    np.testing.assert_allclose(si_sdr(estimate, reference), expected, rtol=1e-6)


def test_torch_inputs_with_gradients_are_accepted():
    rng = np.random.default_rng(2)
    reference = rng.standard_normal((4, 500))
    estimate = reference + rng.standard_normal((4, 500))
    tensor = torch.tensor(estimate, dtype=torch.float32, requires_grad=True)
    np.testing.assert_allclose(si_sdr(tensor, torch.tensor(reference)), si_sdr(estimate, reference), rtol=1e-4)
    np.testing.assert_allclose(sdr(tensor, reference), sdr(estimate, reference), rtol=1e-4)


def test_si_sdr_improvement_matches_fast_bss_eval_and_broadcasts_the_mixture():
    rng = np.random.default_rng(3)
    sources = rng.standard_normal((3, 2000))
    mixture = sources.sum(axis=0)
    estimates = sources + 0.2 * rng.standard_normal((3, 2000))
    expected = fast_bss_eval.si_sdr(sources[:, None], estimates[:, None])[:, 0] - fast_bss_eval.si_sdr(
        sources[:, None], np.broadcast_to(mixture, (3, 1, 2000))
    )[:, 0]
    np.testing.assert_allclose(si_sdr_improvement(estimates, mixture, sources), expected, rtol=1e-6)
    assert (si_sdr_improvement(estimates, mixture, sources) > 0).all()


def test_silent_reference_is_nan_without_warnings(no_warnings):
    reference = np.zeros((2, 100))
    estimate = np.stack([np.zeros(100), np.ones(100)])
    assert np.isnan(sdr(estimate, reference)).all()
    assert np.isnan(si_sdr(estimate, reference)).all()
    assert np.isnan(si_sdr_improvement(estimate, estimate[1], reference)).all()


def test_perfect_and_silent_estimates_are_clipped(no_warnings):
    reference = np.random.default_rng(4).standard_normal(1000)
    assert sdr(reference, reference) == MAX_DB
    assert si_sdr(reference, reference) == MAX_DB
    assert si_sdr(-0.25 * reference, reference) == MAX_DB
    assert sdr(reference, reference, max_db=60.0) == 60.0
    assert sdr(np.zeros(1000), reference) == 0.0
    assert si_sdr(np.zeros(1000), reference) == -MAX_DB


def test_aggregate_with_unequal_counts():
    records = [
        ("a", "piano", 1.0),
        ("a", "bass", 3.0),
        ("b", "piano", 5.0),
        ("c", "piano", 2.0),
        ("c", "bass", 4.0),
        ("c", "drums", 6.0),
    ]
    result = aggregate(records)
    assert result.by_source.mean == pytest.approx(3.5)
    assert result.by_source.count == 6
    assert result.by_piece.mean == pytest.approx(np.mean([2.0, 5.0, 4.0]))
    assert result.by_piece.count == 3
    assert result.by_instrument.mean == pytest.approx(np.mean([8 / 3, 3.5, 6.0]))
    assert result.by_instrument.median == pytest.approx(3.5)
    assert result.per_instrument["piano"].mean == pytest.approx(8 / 3)
    assert result.per_instrument["piano"].count == 3
    assert set(result.per_instrument) == {"piano", "bass", "drums"}


def test_summary_quartiles():
    summary = summarise([4.0, 1.0, 3.0, 2.0, 10.0])
    assert (summary.q1, summary.median, summary.q3) == (2.0, 3.0, 4.0)
    assert summary.mean == pytest.approx(4.0)


def test_aggregate_refuses_nan_and_empty_input():
    with pytest.raises(ValueError, match="silent references"):
        aggregate([("a", "piano", 1.0), ("a", "bass", float("nan"))])
    with pytest.raises(ValueError):
        aggregate([])
