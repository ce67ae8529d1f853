"""Kelz and Widmer's stage 2: linear non-negative demixing on the canonical dictionary, and per-pitch thresholds.

For a piece's spectrogram V [mel bins, frames] and the dictionary D [mel bins, notes]:

    A = argmin_{A >= 0}  lambda_r ||D A - V||^2                           (a Frobenius sum)
                       + lambda_h mean_j ||A_j||_1 / (||A_j||_2 + eps)      (Hoyer sparsity per frame)
                       + lambda_t mean_{k=1..K, j} ||A_j - A_{j+k}||^2      (temporal continuity)

solved as the paper does, by Adam with a projection onto A >= 0 after every step, for all
frames of a batch of pieces at once (padded to the longest; padding frames count nowhere).
Adam is elementwise, so solving pieces together gives each the iterates it would get alone.

Gradients are written out rather than taken by autograd: the reconstruction term's is
2 lambda_r (G A - D^T V) with G = D^T D (notes x notes) computed once, one 88 x 88 product per
step instead of a 256 x 88 product and its backward (4x faster here); the regularisers' closed
forms are 6x faster than autograd through them (the tests check them against autograd).
The default initialisation is the unconstrained least-squares solution clipped at 0 (from a
uniform start, and at lr 0.01, hundreds of steps fall short); the paper's is `init: uniform`.
Each frame's Adam step is in units of its level (`frame_relative_steps`, ours): on the
`partita bench kelz` piece (2503 frames, lambdas 0) 50 steps reach 1.001x scipy's NNLS
objective over the piece, the worst frame 0.2% of its energy above its optimum (100 steps:
1.00001x, 0.00%); in absolute units (the paper's) 100 steps reach 1.00065x, and near-silent
frames 65-188x their energy above it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from components.errors import PartitaError
from components.metrics.transcription import apply_thresholds, frame_scores, tune_thresholds
from components.schema import StrictModel

HOYER_EPS = 1e-8


class DemixConfig(StrictModel):
    lambda_r: float = Field(1.0, gt=0, description="weight of the reconstruction ||D A - V||^2")
    lambda_h: float = Field(1e-4, ge=0, description="weight of the Hoyer sparsity term (paper: 1e-4)")
    lambda_t: float = Field(1e-4, ge=0, description="weight of the temporal term (paper: 1e-4)")
    lags: int = Field(4, ge=1, description="the temporal term compares frame j with j+1 .. j+lags (paper: 4)")
    steps: int = Field(50, ge=0, description="Adam steps per batch of pieces (50: within 0.1% of scipy NNLS over the `partita bench kelz` piece at lambdas 0, and of 100 steps with the paper's lambdas)")
    lr: float = Field(0.1, gt=0, description="Adam learning rate, in units of each frame's level (frame_relative_steps) or of activation (a note at the dictionary's velocity is 1)")
    init: Literal["least_squares", "uniform"] = Field("least_squares", description="clipped least squares, or U[0, init_scale)")
    init_scale: float = Field(1.0, gt=0)
    frame_relative_steps: bool = Field(True, description="Adam steps in units of each frame's largest starting activation (ours); false: absolute activation units (paper)")
    seed: int = Field(0, description="seed of the uniform initialisation")
    pieces_per_batch: int = Field(8, gt=0, description="pieces solved together (memory: notes x frames per piece, x4 for Adam)")


@dataclass
class Problem:
    """A batch of pieces, padded: V [B, bins, T], `valid` [B, T] marks real frames."""

    spectrograms: torch.Tensor
    valid: torch.Tensor

    @classmethod
    def pad(cls, spectrograms: list[torch.Tensor]) -> "Problem":
        longest = max(s.shape[1] for s in spectrograms)
        batch = spectrograms[0].new_zeros(len(spectrograms), spectrograms[0].shape[0], longest)
        valid = torch.zeros(len(spectrograms), longest, dtype=torch.bool, device=batch.device)
        for i, s in enumerate(spectrograms):
            batch[i, :, : s.shape[1]] = s
            valid[i, : s.shape[1]] = True
        return cls(batch, valid)


def check_dictionary(dictionary: torch.Tensor, n_bins: int) -> None:
    if dictionary.ndim != 2 or dictionary.shape[0] != n_bins:
        raise PartitaError(
            f"the dictionary has shape {tuple(dictionary.shape)} but the spectrograms have {n_bins} mel bins",
            f"use a dictionary of {n_bins} x notes: the data set's own (reader.dictionary) or one built with the same n_mels",
        )
    if (dictionary < 0).any():
        raise PartitaError("the dictionary has negative entries", "use magnitude (mel_power 1 or 2) note profiles, not dB")


def _weights(valid: torch.Tensor, config: DemixConfig) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Per piece: lambda_h / frames, lambda_t / (frame pairs over all lags) [B, 1]; per lag, which pairs count [B, T - k]."""
    both = [valid[:, lag:] & valid[:, :-lag] for lag in range(1, config.lags + 1)]
    frames = valid.sum(dim=1, keepdim=True).clamp(min=1)
    pairs = sum(b.sum(dim=1, keepdim=True) for b in both).clamp(min=1)
    return config.lambda_h / frames, config.lambda_t / pairs, both


def regularisers(activations: torch.Tensor, valid: torch.Tensor, config: DemixConfig) -> torch.Tensor:
    """lambda_h * Hoyer + lambda_t * temporal term per piece, [B]; activations [B, notes, T] >= 0."""
    hoyer_weight, temporal_weight, both = _weights(valid, config)
    hoyer = activations.sum(dim=1) / (activations.norm(dim=1) + HOYER_EPS)  # A >= 0, so the L1 norm is the sum
    total = (hoyer_weight * hoyer * valid).sum(dim=1)
    for lag, pairs in enumerate(both, start=1):
        change = (activations[..., lag:] - activations[..., :-lag]).square().sum(dim=1)
        total = total + (temporal_weight * change * pairs).sum(dim=1)
    return total


def add_regulariser_gradient(activations: torch.Tensor, valid: torch.Tensor, config: DemixConfig, gradient: torch.Tensor) -> None:
    """gradient += d regularisers / d activations in closed form (several times faster than autograd; tests compare them).

    Valid frames must come first in each row (padding at the end), as `Problem.pad` lays them out.
    """
    hoyer_weight, temporal_weight, _ = _weights(valid, config)
    if config.lambda_h:
        # d(S / (N + eps)) / dA = 1 / (N + eps) - S / ((N + eps)^2 N) * A per frame, the second part 0 where N = 0
        norm = activations.norm(dim=1, keepdim=True)
        inverse = 1 / (norm + HOYER_EPS)
        weight = (hoyer_weight * valid)[:, None, :]
        gradient.add_(inverse * weight)
        slope = activations.sum(dim=1, keepdim=True) * inverse.square() / norm.clamp(min=torch.finfo(norm.dtype).tiny)
        gradient.addcmul_(slope * weight, activations, value=-1)
    if config.lambda_t:
        # d/dA_j of sum over lags and valid pairs of ||A_j - A_{j+-k}||^2 = 2 (n_j A_j - sum of A over j's valid
        # neighbours j +- 1..K), n_j their count: one convolution along time instead of a loop over lags.
        batch, notes, frames = activations.shape
        kernel = activations.new_ones(1, 1, 2 * config.lags + 1)
        kernel[..., config.lags] = 0
        neighbours = torch.nn.functional.conv1d(activations.reshape(batch * notes, 1, frames), kernel, padding=config.lags)
        count = torch.nn.functional.conv1d(valid[:, None, :].to(activations.dtype), kernel, padding=config.lags)
        weight = (2 * temporal_weight * valid)[:, None, :]
        gradient.addcmul_(count * weight, activations).sub_(neighbours.reshape(batch, notes, frames) * weight)


def objective(dictionary: torch.Tensor, problem: Problem, activations: torch.Tensor, config: DemixConfig) -> torch.Tensor:
    """The full objective per piece, [B] (what the solver minimises)."""
    residual = torch.einsum("mn,bnt->bmt", dictionary, activations) - problem.spectrograms
    reconstruction = (residual.square().sum(dim=1) * problem.valid).sum(dim=1)
    return config.lambda_r * reconstruction + regularisers(activations, problem.valid, config)


def solve(dictionary: torch.Tensor, problem: Problem, config: DemixConfig) -> torch.Tensor:
    """Activations [B, notes, T] >= 0 (0 at padding) minimising the objective, on the spectrograms' device."""
    check_dictionary(dictionary, problem.spectrograms.shape[1])
    dictionary = dictionary.to(problem.spectrograms)
    gram = dictionary.T @ dictionary
    correlation = torch.einsum("mn,bmt->bnt", dictionary, problem.spectrograms)  # D^T V
    mask = problem.valid[:, None, :].to(gram.dtype)
    if config.init == "least_squares":
        ridge = 1e-6 * gram.diagonal().mean() * torch.eye(len(gram), dtype=gram.dtype, device=gram.device)
        start = torch.linalg.solve(gram + ridge, correlation).clamp(min=0)
    else:
        generator = torch.Generator(device=gram.device).manual_seed(config.seed)
        start = torch.rand(correlation.shape, generator=generator, device=gram.device, dtype=gram.dtype) * config.init_scale
    # Adam moves every coordinate by about lr whatever its gradient's size, so in activation units
    # a near-silent frame (optimum ~0) is knocked about by 0.1 and ends far above its optimum. With
    # frame_relative_steps each frame's step is lr * level instead, level = its largest starting
    # activation: steps in proportion to each frame's loudness.
    if config.frame_relative_steps:
        # (at least the activation with which the loudest atom alone has the frame's norm, so a frame
        # whose clipped start is all 0 still gets steps of its own size)
        reach = problem.spectrograms.norm(dim=1, keepdim=True) / dictionary.norm(dim=0).max()
        step_scale = torch.maximum(start.amax(dim=1, keepdim=True), reach) * mask
    else:
        step_scale = mask
    return _projected_adam(gram, correlation, start * mask, step_scale, problem.valid, config)


def _projected_adam(gram: torch.Tensor, correlation: torch.Tensor, activations: torch.Tensor, step_scale: torch.Tensor, valid: torch.Tensor, config: DemixConfig) -> torch.Tensor:
    """Adam (betas 0.9, 0.999, eps 1e-8) with a projection onto A >= 0 after each step, each frame's
    step times its `step_scale` (0 at padding), in place on `activations`.

    Written out rather than torch.optim.Adam: with its per-step dispatch and the gradient's and the
    step's rescaling around it, torch's Adam took twice as long per step on the `partita bench kelz`
    piece (108 vs 55-70 ms for 100 steps, 2 threads); the update itself is the textbook one.
    """
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    gradient, denominator = torch.empty_like(activations), torch.empty_like(activations)
    first, second = torch.zeros_like(activations), torch.zeros_like(activations)
    gram = (2 * config.lambda_r * gram).expand(len(activations), *gram.shape)
    inverse_scale = 1 / step_scale.clamp(min=torch.finfo(step_scale.dtype).tiny)
    for step in range(1, config.steps + 1):
        torch.baddbmm(correlation, gram, activations, beta=-2 * config.lambda_r, out=gradient)  # 2 lambda_r (G A - D^T V)
        if config.lambda_h or config.lambda_t:
            add_regulariser_gradient(activations, valid, config, gradient)
        first.lerp_(gradient, 1 - beta1)
        second.mul_(beta2).addcmul_(gradient, gradient, value=1 - beta2)
        # A -= lr * scale * m_hat / (sqrt(v_hat) + eps), rearranged to two passes: the denominator is
        # (sqrt(v) / sqrt(1 - beta2^t) + eps) / scale, huge (no step) where the scale is 0: padding, silent frames
        correction = (1 - beta2**step) ** 0.5
        torch.sqrt(second, out=denominator).add_(eps * correction).mul_(inverse_scale)
        activations.addcdiv_(first, denominator, value=-config.lr * correction / (1 - beta1**step)).clamp_(min=0)
    return activations


def decompose(dictionary: np.ndarray | torch.Tensor, spectrograms: list, config: DemixConfig, device: str | torch.device = "cpu") -> list[np.ndarray]:
    """Activations float32 [notes, frames] for each spectrogram [bins, frames], pieces solved in batches."""
    dictionary = torch.as_tensor(dictionary, dtype=torch.float32, device=device)
    out = []
    for start in range(0, len(spectrograms), config.pieces_per_batch):
        part = [torch.from_numpy(np.array(s, dtype=np.float32)).to(device) for s in spectrograms[start : start + config.pieces_per_batch]]  # a copy: Arrow arrays are read-only
        activations = solve(dictionary, Problem.pad(part), config)
        out += [a[:, : s.shape[1]].cpu().numpy() for a, s in zip(activations, part)]
    return out


# --- thresholds and scores ---------------------------------------------------------------


def threshold_candidates(activations: list[np.ndarray], count: int) -> np.ndarray:
    """`count` quantiles of the positive activations (the candidates tried for every pitch), and 0."""
    values = np.concatenate([a.ravel() for a in activations])
    values = values[values > 0]
    if not len(values):
        return np.zeros(1)
    return np.unique(np.concatenate([[0.0], np.quantile(values, np.linspace(0, 1, count, endpoint=False)[1:])]))


def fit_thresholds(activations: list[np.ndarray], rolls: list[np.ndarray], count: int = 200) -> np.ndarray:
    """Per-pitch thresholds maximising framewise F over the given pieces pooled (Kelz: train + valid only).

    activations and rolls are per piece [notes, frames]; a roll is binary or velocities (> 0 sounds).
    """
    if len(activations) != len(rolls) or not activations:
        raise ValueError(f"need one roll per decomposition and at least one piece, got {len(activations)} and {len(rolls)}")
    pooled = np.concatenate(activations, axis=1).T
    reference = np.concatenate([np.asarray(r) > 0 for r in rolls], axis=1).T
    return tune_thresholds(pooled, reference, threshold_candidates(activations, count))


def piece_scores(activations: np.ndarray, roll: np.ndarray, thresholds: np.ndarray) -> tuple[float, float, float]:
    """Framewise P, R, F1 of one piece, pooled over all its frames and pitches."""
    return tuple(frame_scores(np.asarray(roll).T > 0, apply_thresholds(activations.T, thresholds)))
