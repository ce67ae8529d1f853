"""Mask-inference losses (Manilow's dissertation, shared by the separation families)."""

from __future__ import annotations

import torch


def tpsa_loss(masks: torch.Tensor, mix_mag: torch.Tensor, target_psa: torch.Tensor) -> torch.Tensor:
    """Truncated phase-sensitive approximation: mean |M * |X| - clamp(|S| cos(angle S - angle X), 0, |X|)|.

    masks, target_psa [B, S, F, T]; mix_mag [B, F, T]. The clamped target is the
    featurizer's `target_psa`, so this is an L1 between the masked mixture and it.
    """
    return (masks * mix_mag.unsqueeze(1) - target_psa).abs().mean()
