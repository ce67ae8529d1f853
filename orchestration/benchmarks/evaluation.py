"""The `eval` benchmark: batched note MSE / mIoU against a per-example loop.

The per-example loop is the straightforward implementation (the authors' shape):
for each chord, every (note, slot) MSE and IoU in numpy, then the two Hungarian
assignments. Inputs are random spectrograms at the size of JSB-multi's
validation split (5634 chords, 4 notes, 7 slots): the metric's cost does not
depend on what the spectrograms show.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from components.metrics.slots import match_notes
from orchestration.benchmarks import Figure, interleave, register

SLOTS, NOTES, BINS, FRAMES = 7, 4, 128, 32


def per_example(pred_db: np.ndarray, note_db: np.ndarray, valid: np.ndarray, threshold: float = -30.0) -> tuple[float, float]:
    mse_total, iou_total = 0.0, 0.0
    for slots, notes, ok in zip(pred_db, note_db, valid):
        notes = notes[ok]
        mse = np.array([[((n - s) ** 2).mean() for s in slots] for n in notes])
        iou = np.empty_like(mse)
        for i, n in enumerate(notes >= threshold):
            for k, s in enumerate(slots >= threshold):
                union = (n | s).sum()
                iou[i, k] = (n & s).sum() / union if union else 1.0
        r, c = linear_sum_assignment(mse)
        mse_total += mse[r, c].mean()
        r, c = linear_sum_assignment(iou, maximize=True)
        iou_total += iou[r, c].mean()
    return mse_total / len(pred_db), iou_total / len(pred_db)


def batched(pred_db: torch.Tensor, note_db: torch.Tensor, valid: torch.Tensor, batch: int = 512) -> tuple[float, float]:
    mse, iou = [], []
    for start in range(0, len(pred_db), batch):
        part = slice(start, start + batch)
        matching = match_notes(pred_db[part], note_db[part], valid[part])
        mse.append(matching.note_mse)
        iou.append(matching.iou)
    return float(np.concatenate(mse).mean()), float(np.concatenate(iou).mean())


@register("eval")
def evaluation(quick: bool) -> list[Figure]:
    chords = 500 if quick else 5634
    generator = torch.Generator().manual_seed(0)
    pred_db = torch.randn(chords, SLOTS, BINS, FRAMES, generator=generator) * 30 - 30
    note_db = torch.randn(chords, NOTES, BINS, FRAMES, generator=generator) * 30 - 30
    valid = torch.rand(chords, NOTES, generator=generator) < 0.9
    valid[:, 0] = True
    arrays = pred_db.numpy(), note_db.numpy(), valid.numpy()
    ours = batched(pred_db, note_db, valid)
    reference = per_example(*arrays)
    assert np.allclose(ours, reference, rtol=1e-4), (ours, reference)  # the two agree
    fast, slow = interleave([lambda: batched(pred_db, note_db, valid), lambda: per_example(*arrays)], 1 if quick else 3)
    note = f"{chords} chords x {NOTES} notes x {SLOTS} slots, {torch.get_num_threads()} threads"
    return [
        Figure("eval", "batched seconds per split", round(fast, 2), "s", note=note),
        Figure("eval", "per-example loop seconds per split", round(slow, 2), "s", note=note),
        Figure("eval", "speed-up of batched evaluation", round(slow / fast, 1), "x", ">= 20", note),
    ]
