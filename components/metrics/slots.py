"""Note discovery metrics: best-matched note MSE and mIoU (MusicSlots, appendix A.4).

For each chord, every (note, slot) pair is scored; the Hungarian algorithm
(scipy's linear_sum_assignment) matches notes to slots, minimising MSE for the
note MSE and maximising IoU for the mIoU, and the chord's score is the mean over
its matched pairs. Unmatched slots and padding notes are ignored.

The cost matrices of a whole batch are built with tensor ops, and so are the
assignments: with at most 4 notes and K = 7 slots a chord has only 840 ways to
give its notes distinct slots, so scoring them all at once for a whole batch
beats 2 x B calls to linear_sum_assignment (which stays the fallback for large
problems and gives the same optimum).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

# Chords per tensor op. Each chunk is read several times (centring, norms, matmul,
# masks), so it should stay in cache: 16 chords x 11 maps x 16 KB is about 3 MB.
# 256 was 5x slower on this CPU (measured with 1000 JSB-sized chords).
CHUNK = 16
_CENTRE_DB = -50.0  # middle of the dB range (-100 .. ~+40)
MAX_ENUMERATED = 5040  # note-to-slot assignments scored exhaustively (7P4 = 840, 8P4 = 1680, ...)


@dataclass(frozen=True)
class NoteMatching:
    """Per-chord scores and assignments; unmatched note rows (padding, or more notes than slots) get slot -1."""

    note_mse: np.ndarray  # [B] mean squared dB error over MSE-matched pairs
    iou: np.ndarray  # [B] mean IoU over IoU-matched pairs
    mse_slot: np.ndarray  # [B, N] int, the slot matched to each note by MSE
    iou_slot: np.ndarray  # [B, N] int, the slot matched to each note by IoU


def pairwise_mse(pred_db: torch.Tensor, note_db: torch.Tensor) -> torch.Tensor:
    """[B, K, F, T] slots, [B, N, F, T] notes -> [B, N, K] pixel-mean squared dB error."""
    # |a|^2 + |b|^2 - 2ab: one batched matmul instead of B x N x K difference images.
    # Centred on the dB range and with the norms summed in float64, the expansion's
    # cancellation error stays under 1e-5 of the MSE.
    note, pred = note_db.flatten(2) - _CENTRE_DB, pred_db.flatten(2) - _CENTRE_DB
    norms = note.pow(2).sum(-1, dtype=torch.float64).unsqueeze(2) + pred.pow(2).sum(-1, dtype=torch.float64).unsqueeze(1)
    squared = norms - 2 * (note @ pred.transpose(1, 2)).double()
    return squared.clamp_min(0) / note.shape[-1]


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
    above the absolute level `threshold_db` (see components.data.features.note_masks).
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
    note_mse, mse_slot = assign(mse_matrix, valid, maximize=False)
    mean_iou, iou_slot = assign(iou_matrix, valid, maximize=True)
    return NoteMatching(note_mse=note_mse, iou=mean_iou, mse_slot=mse_slot, iou_slot=iou_slot)


@lru_cache(maxsize=None)
def _injections(notes: int, slots: int) -> np.ndarray:
    """Every way to give `notes` rows distinct slots: [P, notes]."""
    return np.array(list(itertools.permutations(range(slots), notes)), dtype=np.int64).reshape(-1, notes)


def assign(cost: np.ndarray, valid: np.ndarray, maximize: bool) -> tuple[np.ndarray, np.ndarray]:
    """Optimal one-to-one note -> slot assignment per chord: (mean matched cost [B], slot [B, N], -1 unmatched)."""
    batch, notes, slots = cost.shape
    injections = _injections(notes, slots) if notes <= slots and math.perm(slots, notes) <= MAX_ENUMERATED else None
    if injections is None:
        return _assign_each(cost, valid, maximize)
    # padding rows cost nothing wherever they go, so they never constrain the real notes
    masked = np.where(valid[:, :, None], cost, 0.0)
    totals = masked[:, np.arange(notes), injections].sum(-1)  # [B, P]
    best = totals.argmax(1) if maximize else totals.argmin(1)
    slot = np.where(valid, injections[best], -1)
    return totals[np.arange(batch), best] / valid.sum(1), slot


def _assign_each(cost: np.ndarray, valid: np.ndarray, maximize: bool) -> tuple[np.ndarray, np.ndarray]:
    batch, notes, _ = cost.shape
    mean, slot = np.empty(batch), np.full((batch, notes), -1)
    for b in range(batch):
        rows = np.flatnonzero(valid[b])
        r, c = linear_sum_assignment(cost[b, rows], maximize=maximize)
        mean[b] = cost[b, rows[r], c].mean()
        slot[b, rows[r]] = c
    return mean, slot
