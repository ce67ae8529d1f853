"""Similarity of two spectrograms seen as images: SSIM (Wang et al. 2004).

Hand-written because no image-quality library is in the lock (scikit-image's
`structural_similarity` with gaussian_weights=True, sigma 1.5, use_sample_covariance=False
computes the same). An 11-tap Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03; the mean
SSIM over the windows that fit inside the image ("valid" convolution).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

WINDOW, SIGMA, K1, K2 = 11, 1.5, 0.01, 0.03


def ssim(estimate: torch.Tensor, reference: torch.Tensor, data_range: float | None = None) -> float:
    """Mean SSIM of two 2-D images of equal shape; data_range defaults to the reference's max - min."""
    if estimate.shape != reference.shape or estimate.ndim != 2:
        raise ValueError(f"ssim needs two 2-D images of one shape, got {tuple(estimate.shape)} and {tuple(reference.shape)}")
    x, y = (t.to(torch.float64)[None, None] for t in (estimate, reference))
    if data_range is None:
        data_range = float(reference.max() - reference.min()) or 1.0
    taps = torch.arange(WINDOW, dtype=torch.float64) - WINDOW // 2
    gauss = torch.exp(-taps.square() / (2 * SIGMA**2))
    gauss = gauss / gauss.sum()

    def blur(image: torch.Tensor) -> torch.Tensor:  # separable Gaussian, valid part only
        return F.conv2d(F.conv2d(image, gauss.view(1, 1, -1, 1)), gauss.view(1, 1, 1, -1))

    mu_x, mu_y = blur(x), blur(y)
    var_x, var_y = blur(x * x) - mu_x.square(), blur(y * y) - mu_y.square()
    covariance = blur(x * y) - mu_x * mu_y
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    index = ((2 * mu_x * mu_y + c1) * (2 * covariance + c2)) / ((mu_x.square() + mu_y.square() + c1) * (var_x + var_y + c2))
    return float(index.mean())
