"""The few-step fit the family tests share: a model trained on one batch with Adam, its loss per step."""

from __future__ import annotations

import torch


def fit(family, model: torch.nn.Module, batch: dict, steps: int, lr: float) -> list[float]:
    """`steps` Adam steps of `family.loss` on `batch`; returns each step's loss (before that step's update)."""
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss, _ = family.loss(model, batch)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    return losses
