"""AutoClip (Seetharaman et al. 2020): clip each step's gradient to a percentile of the norms seen so far.

Manilow's hierarchical models clip at the 10th percentile of all past gradient
norms (manilow.md ch. 2). torch has `clip_grad_norm_` but no adaptive threshold,
so the history and the percentile are kept here.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch


class AutoClip:
    """Call after `backward()`: records the step's total gradient norm, then clips to the percentile of the history.

    The current step's norm is part of the history, so the first step is clipped to its own norm (unchanged).
    `state_dict`/`load_state_dict` carry the history through a checkpoint, so a resumed run clips as before.
    """

    def __init__(self, percentile: float = 10.0):
        if not 0.0 < percentile <= 100.0:
            raise ValueError(f"AutoClip percentile must be in (0, 100], not {percentile}")
        self.percentile = percentile
        self.history: list[float] = []

    def __call__(self, parameters: Iterable[torch.nn.Parameter]) -> tuple[float, float]:
        """Clip in place; returns (the step's norm before clipping, the threshold used)."""
        grads = [p for p in parameters if p.grad is not None]
        norm = torch.nn.utils.get_total_norm([p.grad for p in grads])
        self.history.append(float(norm))
        threshold = float(np.percentile(self.history, self.percentile))
        torch.nn.utils.clip_grads_with_norm_(grads, threshold, norm)
        return self.history[-1], threshold

    def state_dict(self) -> dict:
        return {"percentile": self.percentile, "history": list(self.history)}

    def load_state_dict(self, state: dict) -> None:
        self.percentile, self.history = float(state["percentile"]), list(state["history"])
