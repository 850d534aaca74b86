"""Geometric median (Weiszfeld's algorithm), used to initialise the SAE's pre-encoder bias.

The geometric median minimises the sum of Euclidean distances sum_i ||x_i - y||. Unlike the
mean it is robust to outliers (a few huge-norm activations barely move it), which is why
Gao et al. initialise b_pre with it (paper §2.2, following Bricken et al. 2023).
distributed_geometric_median is the same over every data-parallel rank's points.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
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


@torch.no_grad()
def distributed_geometric_median(
    points: Tensor, group=None, max_iter: int = 200, tol: float = 1e-6, eps: float = 1e-8
) -> Tensor:
    """Geometric median of the union of every rank's points (N_r, d) -> (d,), same on all ranks.

    sae.geomedian.geometric_median (Weiszfeld from the mean, same stopping rule) with each
    sum all-reduced: d + 1 numbers per iteration, however many points the ranks hold.
    All-reduce results are bitwise identical on every rank (gloo, NCCL), so every rank
    takes the same number of iterations."""
    work = points if points.dtype in (torch.float32, torch.float64) else points.float()

    def total(t: Tensor) -> Tensor:
        dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
        return t

    sums = total(torch.cat([work.sum(0), work.new_tensor([len(work)])]))
    y = sums[:-1] / sums[-1]  # (d,) global mean
    n = sums[-1]
    scale = (total((work - y).pow(2).sum().reshape(1))[0] / n).sqrt().clamp_min(eps)
    for _ in range(max_iter):
        w = 1.0 / (work - y).norm(dim=1).clamp_min(eps)  # (N_r,)
        acc = total(torch.cat([w @ work, w.sum().reshape(1)]))
        y_new = acc[:-1] / acc[-1]
        step = (y_new - y).norm()
        y = y_new
        if step <= tol * scale:
            break
    return y.to(points.dtype)
