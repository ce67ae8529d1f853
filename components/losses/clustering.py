"""Deep clustering (Hershey et al. 2016), the loss of Cerberus' embedding head, and clustering its embeddings into masks."""

from __future__ import annotations

import torch


def dominant_source(target_mag: torch.Tensor) -> torch.Tensor:
    """[B, S, F, T] source magnitudes -> one-hot [B, S, F, T] of the loudest source in each bin (Y of the DC loss)."""
    return torch.nn.functional.one_hot(target_mag.argmax(dim=1), target_mag.shape[1]).permute(0, 3, 1, 2).to(target_mag.dtype)


def loud_bins(mix_mag: torch.Tensor, floor_db: float) -> torch.Tensor:
    """[B, F, T] -> float 0/1 [B, F, T]: bins above `floor_db` re each example's maximum.

    Silent bins have no meaningful dominant source; deep clustering leaves them out.
    """
    db = 20.0 * torch.log10(mix_mag.clamp_min(1e-8))
    return (db > db.amax(dim=(-2, -1), keepdim=True) + floor_db).to(mix_mag.dtype)


def deep_clustering_loss(embedding: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """||V V^T - Y Y^T||_F^2 / N^2, averaged over the batch, in its low-rank form.

    embedding V [B, F, T, D] (unit-norm per bin), labels Y [B, S, F, T] (one-hot over S), weights [B, F, T] (0/1 or
    soft; None: every bin). With N = F*T bins the affinity matrices are N x N (160,000^2 for 5 s at hop 256), so
    ||V^T V||^2 - 2 ||V^T Y||^2 + ||Y^T Y||^2 is computed instead: D x D, D x S and S x S products only.
    Normalised by the (weighted) bin count squared so the loss does not grow with segment length.
    """
    v = embedding.flatten(1, 2)  # [B, N, D]
    y = labels.flatten(2).transpose(1, 2)  # [B, N, S]
    if weights is not None:
        w = weights.flatten(1).unsqueeze(-1)
        v, y = v * w, y * w
    count = (weights.flatten(1).sum(1) if weights is not None else torch.full((v.shape[0],), v.shape[1], device=v.device)).clamp_min(1.0)
    vv, vy, yy = v.transpose(1, 2) @ v, v.transpose(1, 2) @ y, y.transpose(1, 2) @ y
    loss = vv.square().sum((1, 2)) - 2.0 * vy.square().sum((1, 2)) + yy.square().sum((1, 2))
    return (loss / count.square()).mean()


@torch.no_grad()
def kmeans_masks(embedding: torch.Tensor, sources: int, weights: torch.Tensor | None = None, iterations: int = 30, seed: int = 0) -> torch.Tensor:
    """Binary masks [B, S, F, T] (one cluster per bin, so they sum to one) from k-means on the embeddings [B, F, T, D].

    k-means with k-means++ seeding, written in torch (batched, on the model's device, no per-example loop
    through scikit-learn). Centroids are fitted on the weighted (loud) bins and every bin is assigned.
    Cluster order is arbitrary: match clusters to references (e.g. scipy's linear_sum_assignment) before scoring.
    """
    b, f, t, d = embedding.shape
    points = embedding.reshape(b, f * t, d).float()
    w = (weights.reshape(b, f * t).float() if weights is not None else torch.ones(b, f * t, device=points.device)) + 1e-12
    generator = torch.Generator(device="cpu").manual_seed(seed)
    rows = torch.arange(b, device=points.device)
    first = torch.multinomial(w.cpu(), 1, generator=generator).squeeze(1).to(points.device)
    centroids = [points[rows, first]]
    for _ in range(1, sources):  # k-means++: next seed drawn in proportion to weight x squared distance to the nearest
        nearest = torch.stack([(points - c.unsqueeze(1)).square().sum(-1) for c in centroids]).amin(0)
        pick = torch.multinomial((w * nearest).cpu() + 1e-12, 1, generator=generator).squeeze(1).to(points.device)
        centroids.append(points[rows, pick])
    centroids = torch.stack(centroids, dim=1)  # [B, S, D]
    for _ in range(iterations):
        assign = torch.cdist(points, centroids).argmin(-1)  # [B, N]
        member = torch.nn.functional.one_hot(assign, sources).float() * w.unsqueeze(-1)  # [B, N, S]
        total = member.sum(1)  # [B, S]
        updated = member.transpose(1, 2) @ points / total.clamp_min(1e-12).unsqueeze(-1)
        centroids = torch.where(total.unsqueeze(-1) > 1e-6, updated, centroids)  # an empty cluster keeps its centroid
    assign = torch.cdist(points, centroids).argmin(-1)
    return torch.nn.functional.one_hot(assign, sources).permute(0, 2, 1).reshape(b, sources, f, t).to(embedding.dtype)
