"""Note discovery metrics: best-matched note MSE and mIoU (MusicSlots, appendix A.4).

For each chord, every (note, slot) pair is scored; the Hungarian algorithm
(scipy's linear_sum_assignment) matches notes to slots, minimising MSE for the
note MSE and maximising IoU for the mIoU, and the chord's score is the mean over
its matched pairs. Unmatched slots and padding notes are ignored.

The cost matrices of a whole batch are built with tensor ops; only the tiny
assignment problems (at most 4 notes x K slots) are solved chord by chord.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

CHUNK = 256  # chords per tensor op, bounding the float copies of the masks


@dataclass(frozen=True)
class NoteMatching:
    """Per-chord scores and assignments; unmatched note rows (padding, or more notes than slots) get slot -1."""

    note_mse: np.ndarray  # [B] mean squared dB error over MSE-matched pairs
    iou: np.ndarray  # [B] mean IoU over IoU-matched pairs
    mse_slot: np.ndarray  # [B, N] int, the slot matched to each note by MSE
    iou_slot: np.ndarray  # [B, N] int, the slot matched to each note by IoU


def pairwise_mse(pred_db: torch.Tensor, note_db: torch.Tensor) -> torch.Tensor:
    """[B, K, F, T] slots, [B, N, F, T] notes -> [B, N, K] pixel-mean squared dB error."""
    # cdist's direct mode sums squared differences without materialising them and
    # without the cancellation of the |a|^2 + |b|^2 - 2ab expansion
    distance = torch.cdist(note_db.flatten(2), pred_db.flatten(2), compute_mode="donot_use_mm_for_euclid_dist")
    return distance.pow(2) / note_db[0, 0].numel()


def pairwise_iou(pred_mask: torch.Tensor, note_mask: torch.Tensor) -> torch.Tensor:
    """[B, K, F, T] and [B, N, F, T] boolean masks -> [B, N, K] intersection over union.

    Two empty masks agree perfectly: their IoU is 1.0, not 0/0. This is a real
    case, not a corner: a note can render silent (FluidR3's violin at MIDI 94),
    and a slot that stays silent for it has found it.
    """
    pred = pred_mask.flatten(2).float()
    note = note_mask.flatten(2).float()
    # counts are exact in float32 up to 2^24 pixels
    intersection = note @ pred.transpose(1, 2)
    union = note.sum(-1).unsqueeze(2) + pred.sum(-1).unsqueeze(1) - intersection
    return torch.where(union > 0, intersection / union.clamp_min(1.0), torch.ones_like(union))


def match_notes(
    pred_db: torch.Tensor, note_db: torch.Tensor, note_valid: torch.Tensor, threshold_db: float = -30.0
) -> NoteMatching:
    """Match each chord's valid notes to slots and score the matches.

    pred_db [B, K, F, T] slot spectrograms in dB, note_db [B, N, F, T] the true
    notes in dB, note_valid [B, N] which note rows are real. Masks are bins at or
    above the absolute level `threshold_db` (see components.features.note_masks).
    """
    if pred_db.shape[0] != note_db.shape[0] or pred_db.shape[2:] != note_db.shape[2:]:
        raise ValueError(f"slots {tuple(pred_db.shape)} and notes {tuple(note_db.shape)} must share batch and spectrogram shape")
    valid = note_valid.detach().cpu().numpy().astype(bool)
    if not valid.any(axis=1).all():
        raise ValueError("every chord needs at least one valid note")
    mse, iou = [], []
    with torch.no_grad():
        for pred, note in zip(pred_db.detach().float().split(CHUNK), note_db.detach().float().split(CHUNK)):
            mse.append(pairwise_mse(pred, note).cpu())
            iou.append(pairwise_iou(pred >= threshold_db, note >= threshold_db).cpu())
    mse_matrix = torch.cat(mse).double().numpy()
    iou_matrix = torch.cat(iou).double().numpy()

    batch, notes = valid.shape
    note_mse, mean_iou = np.empty(batch), np.empty(batch)
    mse_slot, iou_slot = np.full((batch, notes), -1), np.full((batch, notes), -1)
    for b in range(batch):
        rows = np.flatnonzero(valid[b])
        r, c = linear_sum_assignment(mse_matrix[b, rows])
        note_mse[b] = mse_matrix[b, rows[r], c].mean()
        mse_slot[b, rows[r]] = c
        r, c = linear_sum_assignment(iou_matrix[b, rows], maximize=True)
        mean_iou[b] = iou_matrix[b, rows[r], c].mean()
        iou_slot[b, rows[r]] = c
    return NoteMatching(note_mse=note_mse, iou=mean_iou, mse_slot=mse_slot, iou_slot=iou_slot)
