"""Best-matched note MSE and mIoU against brute force, known values and their conventions."""

import itertools
import time

import numpy as np
import pytest
import torch

from components.metrics.slots import match_notes, pairwise_iou, pairwise_mse


def random_chords(n_valid: list[int], slots: int = 5, notes: int = 4, size=(8, 6), seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    batch = len(n_valid)
    pred = torch.rand(batch, slots, *size, generator=gen) * -60  # straddles the -30 dB mask level
    note = torch.rand(batch, notes, *size, generator=gen) * -60
    valid = torch.arange(notes)[None, :] < torch.tensor(n_valid)[:, None]
    return pred, note, valid


def brute_force(pred, note, valid, threshold=-30.0):
    """Best mean MSE and best mean IoU over every injective note -> slot map."""
    best_mse, best_iou = [], []
    for p, n, v in zip(pred, note, valid):
        n = n[v]
        mse = [[float((a - b).pow(2).mean()) for b in p] for a in n]
        iou = []
        for a in n >= threshold:
            row = []
            for b in p >= threshold:
                union = (a | b).sum().item()
                row.append((a & b).sum().item() / union if union else 1.0)
            iou.append(row)
        perms = list(itertools.permutations(range(len(p)), len(n)))
        best_mse.append(min(np.mean([mse[i][k] for i, k in enumerate(perm)]) for perm in perms))
        best_iou.append(max(np.mean([iou[i][k] for i, k in enumerate(perm)]) for perm in perms))
    return np.array(best_mse), np.array(best_iou)


def test_matches_brute_force_for_2_3_and_4_notes():
    pred, note, valid = random_chords([2, 3, 4, 4, 3, 2, 1, 4])
    matching = match_notes(pred, note, valid)
    mse, iou = brute_force(pred, note, valid)
    np.testing.assert_allclose(matching.note_mse, mse, rtol=1e-5)
    np.testing.assert_allclose(matching.iou, iou, rtol=1e-6)


def test_more_notes_than_slots_matches_as_many_as_there_are_slots():
    pred, note, valid = random_chords([4, 3], slots=2, seed=1)
    matching = match_notes(pred, note, valid)
    np.testing.assert_allclose(matching.note_mse, brute_force_rows(pred, note, valid), rtol=1e-5)
    assert ((matching.mse_slot >= 0).sum(1) == 2).all()


def brute_force_rows(pred, note, valid):
    """With fewer slots than notes: best mean over injective slot -> note maps."""
    out = []
    for p, n, v in zip(pred, note, valid):
        n = n[v]
        mse = [[float((a - b).pow(2).mean()) for b in p] for a in n]
        out.append(min(np.mean([mse[i][k] for k, i in enumerate(perm)]) for perm in itertools.permutations(range(len(n)), len(p))))
    return np.array(out)


def test_invariant_to_slot_order_and_assignments_follow_the_slots():
    pred, note, valid = random_chords([4, 3, 2, 4], seed=2)
    perm = torch.randperm(pred.shape[1], generator=torch.Generator().manual_seed(3))
    a, b = match_notes(pred, note, valid), match_notes(pred[:, perm], note, valid)
    np.testing.assert_allclose(a.note_mse, b.note_mse, rtol=1e-6)
    np.testing.assert_allclose(a.iou, b.iou, rtol=1e-6)
    # slot j of the permuted batch is slot perm[j] of the original
    matched = np.where(b.mse_slot >= 0, perm.numpy()[b.mse_slot], -1)
    np.testing.assert_array_equal(matched, a.mse_slot)


def test_assignment_scores_are_the_matched_pairs():
    pred, note, valid = random_chords([4, 2, 3], seed=4)
    matching = match_notes(pred, note, valid)
    mse = pairwise_mse(pred, note)
    for b in range(len(pred)):
        rows = valid[b].nonzero().flatten()
        assert float(mse[b, rows, matching.mse_slot[b, rows]].mean()) == pytest.approx(matching.note_mse[b], rel=1e-6)
        assert (matching.mse_slot[b, ~valid[b].numpy()] == -1).all()
        assert len(set(matching.mse_slot[b, rows].tolist())) == len(rows)  # one note per slot


def test_known_values():
    # two notes, three slots, 1x4 spectrograms
    note = torch.tensor([[[[0.0, 0.0, -100.0, -100.0]], [[-100.0, -100.0, -20.0, -20.0]]]])
    pred = torch.tensor(
        [[[[-100.0, -100.0, -20.0, -100.0]], [[-100.0] * 4], [[-10.0, 0.0, -100.0, -100.0]]]]
    )
    valid = torch.tensor([[True, True]])
    matching = match_notes(pred, note, valid)
    # note 0 -> slot 2: errors (10, 0, 0, 0) -> MSE 25; note 1 -> slot 0: errors (0, 0, 0, 80) -> MSE 1600
    assert matching.mse_slot.tolist() == [[2, 0]]
    assert matching.note_mse[0] == pytest.approx((25 + 1600) / 2)
    # masks at -30 dB: note 0 = {0, 1}, note 1 = {2, 3}; slot 0 = {2}, slot 2 = {0, 1}
    assert matching.iou_slot.tolist() == [[2, 0]]
    assert matching.iou[0] == pytest.approx((1.0 + 0.5) / 2)


def test_threshold_is_absolute_and_inclusive():
    note = torch.tensor([[[[-30.0, -30.001]]]])
    pred = torch.tensor([[[[-30.0, -50.0]]]])
    assert match_notes(pred, note, torch.tensor([[True]])).iou[0] == 1.0
    assert match_notes(pred, note, torch.tensor([[True]]), threshold_db=-40.0).iou[0] == 0.5


def test_two_empty_masks_have_iou_one():
    silent = torch.full((1, 1, 4, 4), -100.0)
    loud = torch.zeros((1, 1, 4, 4))
    assert pairwise_iou(silent >= -30, silent >= -30).item() == 1.0
    assert pairwise_iou(loud >= -30, silent >= -30).item() == 0.0
    # a silent note (FluidR3's violin at MIDI 94) is best matched by a silent slot
    matching = match_notes(torch.cat([loud, silent], 1), silent, torch.tensor([[True]]))
    assert matching.iou[0] == 1.0 and matching.iou_slot.tolist() == [[1]]


def test_padding_notes_are_ignored():
    pred, note, valid = random_chords([2, 3], seed=5)
    scrambled = note.clone()
    scrambled[~valid] = torch.randn_like(scrambled[~valid]) * 50
    a, b = match_notes(pred, note, valid), match_notes(pred, scrambled, valid)
    np.testing.assert_array_equal(a.note_mse, b.note_mse)
    np.testing.assert_array_equal(a.iou, b.iou)
    assert (a.mse_slot[~valid.numpy()] == -1).all() and (a.iou_slot[~valid.numpy()] == -1).all()


def test_a_chord_without_notes_is_an_error():
    pred, note, valid = random_chords([2, 0])
    with pytest.raises(ValueError, match="at least one valid note"):
        match_notes(pred, note, valid)


def test_a_thousand_full_size_chords_take_seconds():
    pred, note, valid = random_chords([4, 3, 2, 4] * 250, slots=7, size=(128, 32), seed=6)
    start = time.perf_counter()
    match_notes(pred, note, valid)
    assert time.perf_counter() - start < 10.0
