"""Schedule-free SignSGD: the optimizer EleutherAI sparsify trains TopK SAEs with by default.

SignSGD (steepest descent in the L∞ norm, Bernstein et al. arXiv 1802.04434) moves every
weight by ±lr. Schedule-free averaging (Defazio et al. arXiv 2405.15682) replaces the
learning-rate decay: the optimizer keeps a fast iterate z that takes the sign steps and an
average x of the z's; gradients are taken at y = β·x + (1-β)·z. Short runs converge much
faster than with Adam and the paper's small learning rate (see benchmarks/train_vs_sparsify.py).

The parameters hold y while training (after `train()`) and x for evaluation and
checkpoints (after `eval()`); like `schedulefree.ScheduleFreeWrapper` (momentum 0.95,
weights lr_max² in the average), only z is stored and x is recovered from y and z, so the
decoder renormalisation the trainer applies to y carries over to x.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor


def default_signum_lr(n_latents: int) -> float:
    """2.5e-3 / sqrt(n / 2^14): half of sparsify's default. Sign steps are not scale-free,
    and our parameters live in normalised units (E||s·x||² = d_in), where sparsify's lr
    overshoots: on SmolLM2-135M (4608 latents, k 32) 0.5x its lr gave held-out FVU 0.108
    after 200k tokens and 0.130 after 1M, against 0.126 and 0.219 at 1x, and 0.194 and
    0.090 at 0.25x (benchmarks/train_vs_sparsify.py activations)."""
    return 2.5e-3 / (n_latents / 2**14) ** 0.5


class ScheduleFreeSignSGD(torch.optim.Optimizer):
    """SignSGD with schedule-free averaging. Call `train()` before stepping, `eval()` to read
    the averaged weights (and `train()` again to go on). Created in train mode."""

    def __init__(self, params, lr: float, momentum: float = 0.95, weight_lr_power: float = 2.0):
        if not lr > 0:
            raise ValueError(f"lr must be positive, got {lr}")
        if not 0 < momentum < 1:
            raise ValueError(f"momentum must be in (0, 1), got {momentum}")
        defaults = dict(lr=lr, momentum=momentum, weight_lr_power=weight_lr_power)
        super().__init__(params, defaults)
        for group in self.param_groups:
            group.setdefault("train_mode", True)

    @property
    def train_mode(self) -> bool:
        return bool(self.param_groups[0]["train_mode"])

    @torch.no_grad()
    def eval(self) -> None:
        """Parameters y -> x = (y - (1-β)·z) / β, the average to evaluate and save."""
        for group in self.param_groups:
            if group["train_mode"]:
                for p in self._with_z(group):
                    p.lerp_(self.state[p]["z"], 1 - 1 / group["momentum"])
                group["train_mode"] = False

    @torch.no_grad()
    def train(self) -> None:
        """Parameters x -> y = β·x + (1-β)·z, where the next gradient is taken."""
        for group in self.param_groups:
            if not group["train_mode"]:
                for p in self._with_z(group):
                    p.lerp_(self.state[p]["z"], 1 - group["momentum"])
                group["train_mode"] = True

    @contextlib.contextmanager
    def average_weights(self) -> Iterator[None]:
        """Parameters hold x inside the block; afterwards exactly the y they held before
        (restored bit for bit, so saving a checkpoint never perturbs training)."""
        if not self.train_mode:
            yield
            return
        params = [p for group in self.param_groups for p in group["params"]]
        saved = [p.detach().clone() for p in params]
        self.eval()
        try:
            yield
        finally:
            with torch.no_grad():
                for p, y in zip(params, saved, strict=True):
                    p.copy_(y)
            for group in self.param_groups:
                group["train_mode"] = True

    def _with_z(self, group: dict) -> list[Tensor]:
        return [p for p in group["params"] if "z" in self.state[p]]

    @torch.no_grad()
    def step(self, closure=None):
        if closure is not None:
            raise ValueError("ScheduleFreeSignSGD does not take a closure")
        if not self.train_mode:
            raise RuntimeError("call train() before step(): the parameters hold the average x")
        for group in self.param_groups:
            lr, beta = group["lr"], group["momentum"]
            # Weight of this step's z in the running average: later, larger-lr steps count more.
            lr_max = group["lr_max"] = max(lr, group.get("lr_max", 0.0))
            weight = lr_max ** group["weight_lr_power"]
            group["weight_sum"] = group.get("weight_sum", 0.0) + weight
            c = weight / group["weight_sum"] if group["weight_sum"] > 0 else 0.0
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "z" not in state:
                    state["z"] = p.detach().clone()
                z = state["z"]
                p.lerp_(z, 1 - 1 / beta)  # y -> x
                z.add_(p.grad.sign(), alpha=-lr)  # the sign step (gradient taken at y)
                p.lerp_(z, c)  # x -> average including the new z
                p.lerp_(z, 1 - beta)  # x -> y for the next gradient
        return None
