"""Feature -> output: which SAE latents, at which positions, caused a token.

With x = x̂(z) + ε at the SAE's hook point (ε = the SAE's error, its own node) and m the
metric of a `Target`, attribution patching (Syed et al. 2023; Marks et al. 2024) gives

    A(i, p) = z_i(p) · (∂m/∂x(p) · dir_i)        latent i at position p
    A(ε, p) = ε(p) · ∂m/∂x(p)                    the error at position p

for every node from one forward and one backward pass: ablating z_i(p) to 0 changes m by
about -A(i, p). A latent's score is the sum over its positions (what ablating it
everywhere does). The TopK selection is held fixed, as the steering hook's ablation does.

Integrated gradients (method="ig") average ∂m/∂x over `steps` points of the path that
scales every node of the layer (features and error, positions >= first) from 0 to its
value, x(α) = b + α (x - b) with b the decoder bias, and multiply by the node's value.
The steps run as one batch. They sum to m(x) - m(b): the share each node has in the
whole layer's effect, where the linear estimate only sees the slope at x.

Position 0 is left out by default (`first=1`): its residual is an attention sink whose
norm is tens of times the others', which the SAE reconstructs poorly; the project's
metrics and readouts skip it too.

Steering levers (a `SteeringHook`) may be active: attribution then explains the model as
it ran with them, and a clamped latent shows up with its clamped value.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
from torch import Tensor

from sae import TopKSAE
from steer.lm.models import LoadedModel, block_output
from steer.steering import SteeringHook, sae_layer

from .targets import Target, as_ids

METHODS = ("linear", "ig")


@dataclass
class LatentScore:
    latent: int
    score: float
    """Σ_p A(i, p): the estimated drop of the metric when the latent is ablated everywhere."""
    act: float
    """Its largest activation over the attributed positions."""
    positions: list[tuple[int, float]] = field(default_factory=list)
    """(position, A(i, p)) where it fires, strongest first."""


@dataclass
class Attribution:
    target: Target
    method: str
    metric: float
    """m as the model computes it on the context (levers applied, if any)."""
    first: int
    """First attributed position (earlier positions are left as they are)."""
    latents: Tensor  # (N,) long: one node per active (latent, position)
    positions: Tensor  # (N,) long
    acts: Tensor  # (N,) z_i(p)
    scores: Tensor  # (N,) A(i, p)
    error: Tensor  # (T,) A(ε, p), 0 before `first`
    n_latents: int

    def totals(self) -> Tensor:
        """(n_latents,) Σ_p A(i, p)."""
        return torch.zeros(self.n_latents).index_add_(0, self.latents, self.scores)

    def top(self, n: int = 10) -> list[LatentScore]:
        """The n latents with the largest |Σ_p A(i, p)|."""
        totals = self.totals()
        active = self.latents.unique()
        order = totals[active].abs().argsort(descending=True)[:n]
        out = []
        for latent in active[order].tolist():
            mask = self.latents == latent
            pos, sc = self.positions[mask], self.scores[mask]
            by = sc.abs().argsort(descending=True)
            out.append(
                LatentScore(
                    latent,
                    float(totals[latent]),
                    float(self.acts[mask].max()),
                    [(int(pos[j]), float(sc[j])) for j in by],
                )
            )
        return out

    @property
    def features_total(self) -> float:
        return float(self.scores.sum())

    @property
    def error_total(self) -> float:
        return float(self.error.sum())

    @property
    def error_share(self) -> float:
        """|error| / (|features| + |error|): how much of the layer's attributed effect on the
        metric comes through the SAE's error term rather than through its latents."""
        f, e = abs(self.features_total), abs(self.error_total)
        return e / (f + e) if f + e > 0 else 0.0


# ---------------------------------------------------------------------- forward with a leaf
def _forward(
    lm: LoadedModel,
    ids: Tensor,
    layer: int,
    make_x,
    levers: SteeringHook | None = None,
) -> tuple[Tensor, Tensor]:
    """Run ids (B, T); block `layer`'s output x is replaced by make_x(x), a leaf that
    requires grad. -> (last-position logits (B, V), that leaf (B, T, d))."""
    held: dict[str, Tensor] = {}

    def hook(_module, _args, output):
        held["x"] = make_x(block_output(output))
        return (held["x"], *output[1:]) if isinstance(output, tuple) else held["x"]

    if levers is not None:
        levers.reset(0)
    handle = None
    with levers if levers is not None else contextlib.nullcontext():
        handle = lm.block(layer).register_forward_hook(hook)  # after the levers' hook
        try:
            out = lm.model(input_ids=ids.to(lm.device), use_cache=False, logits_to_keep=1)
        finally:
            handle.remove()
    return out.logits[:, -1], held["x"]


def _leaf(x: Tensor) -> Tensor:
    return x.detach().clone().requires_grad_(True)


def residual_gradient(
    lm: LoadedModel,
    sae: TopKSAE,
    ids: Tensor,
    target: Target,
    levers: SteeringHook | None = None,
) -> tuple[float, Tensor, Tensor]:
    """(m, x (T, d), ∂m/∂x (T, d)) at the SAE's hook point: one forward, one backward."""
    ids = as_ids(ids)[: target.read_at + 1]
    with torch.enable_grad():
        logits, x = _forward(lm, ids[None], sae_layer(lm, sae), _leaf, levers)
        m = target.metric(logits[0])
        (g,) = torch.autograd.grad(m, x)
    return float(m.detach()), x.detach()[0], g[0]


# ---------------------------------------------------------------------- attribution
def attribute(
    lm: LoadedModel,
    sae: TopKSAE,
    ids: Tensor | list[int],
    target: Target,
    *,
    method: str = "linear",
    steps: int = 10,
    first: int = 1,
    levers: SteeringHook | None = None,
) -> Attribution:
    """Attribute the target's metric to every active (latent, position) and the error.

    ids: the context (T,); only tokens up to `target.read_at` are run.
    """
    if method not in METHODS:
        raise ValueError(f"unknown attribution method {method!r}: use {', '.join(METHODS)}")
    if steps < 1:
        raise ValueError(f"integrated gradients need at least 1 step, got {steps}")
    ids = as_ids(ids)
    if not 0 <= target.read_at < len(ids):
        raise ValueError(f"the target reads position {target.read_at}, beyond {len(ids)} tokens")
    first = min(first, target.read_at)  # a one-token context still has one position
    m, x, g = residual_gradient(lm, sae, ids, target, levers)
    if method == "ig":
        g = _ig_gradient(lm, sae, ids, target, x, first, steps, levers)
    return _nodes(sae, x, g, target, method, m, first)


@torch.no_grad()
def _nodes(
    sae: TopKSAE, x: Tensor, g: Tensor, target: Target, method: str, m: float, first: int
) -> Attribution:
    """Node scores from the residual x (T, d) and the gradient g (T, d) to use."""
    x_s, g_s = x.to(sae.device, sae.dtype), g.to(sae.device, sae.dtype)
    top_acts, top_idx = sae.encode(x_s)  # (T, k)
    T, k = top_idx.shape
    dirs = sae.decoder_directions(top_idx.flatten()).view(T, k, -1)  # (T, k, d)
    scores = top_acts * torch.einsum("tkd,td->tk", dirs, g_s)  # (T, k)
    x_hat = sae.decode(top_acts, top_idx)  # (T, d)
    error = ((x_s - x_hat) * g_s).sum(-1)  # (T,)
    keep = top_acts > 0  # (T, k)
    keep[:first] = False
    error[:first] = 0.0
    pos = torch.arange(T, device=top_idx.device)[:, None].expand(T, k)
    return Attribution(
        target=target,
        method=method,
        metric=m,
        first=first,
        latents=top_idx[keep].cpu(),
        positions=pos[keep].cpu(),
        acts=top_acts[keep].float().cpu(),
        scores=scores[keep].float().cpu(),
        error=error.float().cpu(),
        n_latents=sae.n_latents,
    )


def _ig_gradient(
    lm: LoadedModel,
    sae: TopKSAE,
    ids: Tensor,
    target: Target,
    x: Tensor,
    first: int,
    steps: int,
    levers: SteeringHook | None,
) -> Tensor:
    """Mean of ∂m/∂x over x(α) = b + α (x - b), α = 1/steps .. 1, at positions >= first."""
    ids = ids[: target.read_at + 1]
    alphas = torch.arange(1, steps + 1, dtype=torch.float32) / steps  # (s,)
    b = (sae.b_pre / sae.cfg.input_scale).detach().to(x.device, x.dtype)  # (d,)
    scale = torch.ones(steps, x.shape[0], 1, device=x.device, dtype=x.dtype)  # (s, T, 1)
    scale[:, first:] = alphas[:, None, None].to(scale)
    path = b + scale * (x - b)  # (s, T, d) in the model's dtype

    def make_x(_x):  # the clean residual is replaced by the path, one α per row
        return path.clone().requires_grad_(True)

    with torch.enable_grad():
        logits, leaf = _forward(lm, ids[None].expand(steps, -1), sae_layer(lm, sae), make_x, levers)
        (g,) = torch.autograd.grad(target.metric(logits).sum(), leaf)  # rows are independent
    return g.mean(0)  # (T, d)
