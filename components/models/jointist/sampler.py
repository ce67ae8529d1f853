"""Which instruments an example trains f_T and f_MSS on (the authors' sampler, jointist.md).

Per example: `present` draws, with replacement, among the instruments playing in it, each
with probability proportional to (1 / count)^power, where count is how often the class
occurs in the training set (rare classes get more turns than their share); plus `absent`
instruments, uniformly among those not playing, whose targets are empty (silence, no notes),
so the models learn to output nothing for an instrument that is not there. Every example has
present + absent instruments, so examples batch together: when fewer classes are silent than
`absent` (a small class list, all playing), the remaining slots are further present draws.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from components.models.jointist.config import SamplerConfig


class InstrumentSampler:
    def __init__(self, counts: Sequence[int], config: SamplerConfig):
        counts = np.asarray(counts, dtype=float)
        if (counts < 0).any():
            raise ValueError("class counts must be >= 0")
        self.config = config
        # A class never seen in training has no weight of its own; it is only ever drawn as absent.
        self.weights = np.where(counts > 0, np.maximum(counts, 1) ** -config.power, 0.0)

    def draw(self, present: Sequence[int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(class indices, whether each is present): `present` draws from `present`, then `absent` others."""
        present = np.unique(np.asarray(present, dtype=int))
        if not len(present):
            raise ValueError("an example with no instrument playing has nothing to draw")
        weights = self.weights[present]
        # An example made only of classes unseen in training (weight 0) is drawn uniformly.
        p = weights / weights.sum() if weights.sum() > 0 else None
        others = np.setdiff1d(np.arange(len(self.weights)), present)
        n_absent = min(self.config.absent, len(others))
        chosen = rng.choice(present, size=self.config.present + self.config.absent - n_absent, replace=True, p=p)
        absent = rng.choice(others, size=n_absent, replace=False)
        classes = np.concatenate([chosen, absent])
        return classes, np.arange(len(classes)) < len(chosen)
