"""Scaling-law fits of Gao et al. 2024 (§3.1), in log space.

    L(n)    = α·n^β + L∞                       at fixed k: a power law in the number of
                                               latents n plus an irreducible loss L∞
    L(n, k) = exp(α + β_k·log k + β_n·log n + γ·log k·log n) + exp(ζ + η·log k)

Both are fitted by least squares on log L (the paper fits in log space, so that every
point counts alike whatever its loss). Goodness of fit: R² of log L.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class PowerLawFit:
    alpha: float
    beta: float
    irreducible: float
    r2: float

    def __call__(self, n):
        n = torch.as_tensor(n, dtype=torch.float64)
        return self.alpha * n**self.beta + self.irreducible


@dataclass
class JointFit:
    alpha: float
    beta_k: float
    beta_n: float
    gamma: float
    zeta: float
    eta: float
    r2: float

    def __call__(self, n, k):
        ln = torch.log(torch.as_tensor(n, dtype=torch.float64))
        lk = torch.log(torch.as_tensor(k, dtype=torch.float64))
        reducible = torch.exp(
            self.alpha + self.beta_k * lk + self.beta_n * ln + self.gamma * lk * ln
        )
        return reducible + torch.exp(self.zeta + self.eta * lk)


def _r2(pred_log, log_y) -> float:
    ss_res = float(((pred_log - log_y) ** 2).sum())
    ss_tot = float(((log_y - log_y.mean()) ** 2).sum())
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")


def fit_power_law(n, loss, grid: int = 400) -> PowerLawFit:
    """L(n) = α n^β + L∞ through points (n_i, L_i): for every L∞ on a grid in [0, min L),
    log(L − L∞) = log α + β log n is a linear regression; keep the L∞ whose curve fits
    log L best, then refine it on a finer grid around that value."""
    n = torch.as_tensor(n, dtype=torch.float64)
    y = torch.as_tensor(loss, dtype=torch.float64)
    if n.numel() < 3 or n.unique().numel() < 3:
        raise ValueError("a power law with an irreducible term needs at least 3 widths")
    if not bool((y > 0).all()) or not bool((n > 0).all()):
        raise ValueError("power-law fits need positive widths and losses")
    log_n, log_y = n.log(), y.log()

    def solve(l_inf: float):
        log_r = (y - l_inf).log()
        X = torch.stack([torch.ones_like(log_n), log_n], dim=1)
        coef = torch.linalg.lstsq(X, log_r[:, None]).solution[:, 0]
        pred = (coef[0].exp() * n ** coef[1] + l_inf).log()
        return float(((pred - log_y) ** 2).sum()), coef, pred

    top = float(y.min()) * (1 - 1e-9)
    lo, hi = 0.0, top
    best = None
    for _ in range(3):  # grid, then two finer grids around the best value
        for l_inf in torch.linspace(lo, hi, grid).tolist():
            if l_inf >= top:
                continue
            sse, coef, pred = solve(l_inf)
            if best is None or sse < best[0]:
                best = (sse, coef, pred, l_inf)
        step = (hi - lo) / grid
        lo, hi = max(0.0, best[3] - 2 * step), min(top, best[3] + 2 * step)
    _, coef, pred, l_inf = best
    return PowerLawFit(float(coef[0].exp()), float(coef[1]), l_inf, _r2(pred, log_y))


def fit_joint(n, k, loss, restarts: int = 8, seed: int = 0) -> JointFit:
    """The paper's joint law L(n, k) by least squares on log L (L-BFGS from several starts)."""
    n = torch.as_tensor(n, dtype=torch.float64)
    k = torch.as_tensor(k, dtype=torch.float64)
    y = torch.as_tensor(loss, dtype=torch.float64)
    if y.numel() < 7:
        raise ValueError("the joint law has 6 coefficients: give at least 7 (n, k) points")
    ln, lk, log_y = n.log(), k.log(), y.log()
    gen = torch.Generator().manual_seed(seed)
    best = None
    for r in range(restarts):
        init = torch.tensor([0.0, -0.5, -0.2, 0.0, math.log(float(y.min()) / 2), -0.2])
        if r:
            init = init + torch.randn(6, generator=gen, dtype=torch.float64) * 0.5
        p = init.clone().double().requires_grad_(True)
        opt = torch.optim.LBFGS(
            [p],
            max_iter=200,
            tolerance_grad=1e-12,
            tolerance_change=1e-15,
            line_search_fn="strong_wolfe",
        )

        def closure(p=p, opt=opt):
            opt.zero_grad()
            pred = torch.logaddexp(p[0] + p[1] * lk + p[2] * ln + p[3] * lk * ln, p[4] + p[5] * lk)
            loss = ((pred - log_y) ** 2).sum()
            loss.backward()
            return loss

        for _ in range(10):  # each step returns the loss it started from; run several
            opt.step(closure)
        value = float(closure().detach())
        if math.isfinite(value) and (best is None or value < best[0]):
            best = (value, p.detach().clone())
    if best is None:
        raise ValueError("the joint fit did not converge")
    a, bk, bn, g, z, e = best[1].tolist()
    pred = torch.logaddexp(a + bk * lk + bn * ln + g * lk * ln, z + e * lk)
    return JointFit(a, bk, bn, g, z, e, _r2(pred, log_y))
