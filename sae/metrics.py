"""Metrics for TopK SAEs, as defined by Gao et al. (arXiv 2406.04093). Pure tensor functions.

    FVU / normalized MSE   sum ||x - x̂||² / sum ||x - mean(x)||²   (mean over the batch)
    L0                     mean number of nonzero latents per token
    dead fraction          latents that never fire over the evaluated tokens
    dense fraction         latents that fire on more than `threshold` of the tokens
    Δ LM loss              CE with x̂ spliced in − CE clean
    loss recovered         (CE_zero − CE_sae) / (CE_zero − CE_clean)

"Fires" means a strictly positive activation (TopK can keep a zero when fewer than k
pre-activations are positive; that is not a firing).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

DEFINITIONS = {
    "fvu": "normalized MSE = sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 (fraction of variance unexplained)",
    "l0": "mean number of nonzero latents per token",
    "dead_frac": "fraction of latents that never fire on the evaluated tokens",
    "dense_frac": "fraction of latents that fire on more than the dense threshold of tokens",
    "delta_loss": "CE with x_hat spliced in minus clean CE (nats/token)",
    "loss_recovered": "(CE_zero - CE_sae) / (CE_zero - CE_clean)",
}


def total_variance(x: Tensor) -> Tensor:
    """sum ||x - mean(x)||² over a batch x (N, d) -> (), at least 1e-12: FVU's denominator
    (the training losses divide by it too)."""
    return (x - x.mean(0)).pow(2).sum().clamp_min(1e-12)


def fvu(x: Tensor, x_hat: Tensor) -> Tensor:
    """Fraction of variance unexplained = normalized MSE. x, x_hat (N, d) -> ()."""
    x, x_hat = x.float(), x_hat.float()
    return (x - x_hat).pow(2).sum() / total_variance(x)


normalized_mse = fvu


def fvu_from_sums(sq_err: float, sum_x: Tensor, sum_sq: float, n: int) -> float:
    """FVU over N tokens seen in batches, from running sums: sq_err = sum ||x - x_hat||²,
    sum_x = sum x (d,), sum_sq = sum ||x||². The total variance sum ||x - mean(x)||² is
    sum_sq - N·||mean||² (float64 sums keep it exact enough)."""
    mean = sum_x.double() / n
    total = max(sum_sq - n * float(mean.pow(2).sum()), 1e-12)
    return sq_err / total


def l0(acts: Tensor) -> Tensor:
    """Mean number of nonzero entries per token. acts: dense (N, n) or top_acts (N, k) -> ()."""
    return (acts != 0).sum(-1).float().mean()


def firing_counts(top_acts: Tensor, top_indices: Tensor, n_latents: int) -> Tensor:
    """How many tokens each latent fired on (act > 0). (N, k), (N, k) -> (n_latents,) long."""
    fired = (top_acts > 0).reshape(-1).long()
    counts = torch.zeros(n_latents, dtype=torch.long, device=top_indices.device)
    return counts.index_add_(0, top_indices.reshape(-1), fired)


def firing_frequency(counts: Tensor, n_tokens: int) -> Tensor:
    """Per-latent fraction of tokens fired on. (n,) -> (n,) float."""
    if n_tokens <= 0:
        raise ValueError("firing_frequency needs n_tokens > 0")
    return counts.double() / n_tokens


def dead_fraction(counts: Tensor) -> float:
    """Fraction of latents that never fired (counts or frequencies, (n,))."""
    return float((counts == 0).float().mean())


def dense_fraction(freq: Tensor, threshold: float = 0.1) -> float:
    """Fraction of latents firing on more than `threshold` of the tokens (freq (n,))."""
    return float((freq > threshold).float().mean())


def log_density_histogram(
    freq: Tensor, bins: int = 40, lo: float = -8.0, hi: float = 0.0
) -> tuple[Tensor, Tensor, int]:
    """Histogram of log10(firing frequency) over latents that fired at least once.

    Returns (counts (bins,), edges (bins + 1,), n_dead); frequencies outside [10^lo, 10^hi]
    are clamped into the edge bins, and dead latents (log10 0 = -inf) are counted apart.
    """
    freq = freq.double().cpu()
    alive = freq[freq > 0]
    logs = alive.log10().clamp(lo, hi)
    counts = torch.histc(logs, bins=bins, min=lo, max=hi).long()
    edges = torch.linspace(lo, hi, bins + 1, dtype=torch.float64)
    return counts, edges, int((freq == 0).sum())


def delta_loss(ce_sae: float, ce_clean: float) -> float:
    """Increase of the LM's cross-entropy when the SAE's reconstruction is spliced in."""
    return ce_sae - ce_clean


def loss_recovered(ce_clean: float, ce_sae: float, ce_zero: float) -> float:
    """(CE_zero − CE_sae) / (CE_zero − CE_clean): 1 = as good as clean, 0 = as bad as zero."""
    gap = ce_zero - ce_clean
    return (ce_zero - ce_sae) / gap if abs(gap) > 1e-12 else math.nan
