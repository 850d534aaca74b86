"""Geometric median (Weiszfeld's algorithm), used to initialise the SAE's pre-encoder bias.

The geometric median minimises the sum of Euclidean distances sum_i ||x_i - y||. Unlike the
mean it is robust to outliers (a few huge-norm activations barely move it), which is why
Gao et al. initialise b_pre with it (paper §2.2, following Bricken et al. 2023).
"""

from __future__ import annotations

import torch
from torch import Tensor


@torch.no_grad()
def geometric_median(
    points: Tensor,
    max_iter: int = 200,
    tol: float = 1e-6,
    eps: float = 1e-8,
) -> Tensor:
    """Geometric median of points (N, d) -> (d,), in the points' dtype and device.

    Weiszfeld iteration: y <- sum_i w_i x_i / sum_i w_i with w_i = 1 / ||x_i - y||, started
    at the mean. Distances are clamped below by `eps` so a point coinciding with the
    current estimate does not divide by zero. Stops when the step is below `tol` times the
    data's scale (root mean squared distance from the mean), or after `max_iter` steps.
    """
    if points.ndim != 2 or points.shape[0] == 0:
        raise ValueError(
            f"geometric_median needs a non-empty (N, d) tensor, got shape {tuple(points.shape)}"
        )
    if not torch.isfinite(points).all():
        raise ValueError("geometric_median: points contain NaN or Inf")
    # Accumulate in at least float32 (bf16 sums over 32k points would be too coarse).
    work = points if points.dtype in (torch.float32, torch.float64) else points.float()
    y = work.mean(0)  # (d,)
    scale = (work - y).pow(2).sum(1).mean().sqrt().clamp_min(eps)
    for _ in range(max_iter):
        dist = (work - y).norm(dim=1).clamp_min(eps)  # (N,)
        w = 1.0 / dist  # (N,)
        y_new = (w @ work) / w.sum()  # (d,)
        step = (y_new - y).norm()
        y = y_new
        if step <= tol * scale:
            break
    return y.to(points.dtype)
