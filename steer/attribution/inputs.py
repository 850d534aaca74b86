"""Input -> feature: which tokens of the context drive a latent at a position.

The metric is the latent's activation at position q before the TopK selection,
a_j(q) = ReLU(w_j · (s·x(q) - b_pre) + b_j) (the TopK membership held fixed, as in
feature -> output). Token t scores

    linear   e_t · ∂a/∂e_t                 gradient × input embedding (one backward)
    ig       e_t · mean_α ∂a/∂e(α)          integrated gradients, every token's embedding
                                            scaled from 0 together (positions >= 1)

Only the forward up to the SAE's block runs. The estimates are checked by dropping a token
from the context (`drop_effects`): a(q) minus its value on the context without token t
(read at q - 1), for the strongest few. Steering levers at the SAE's block do not change
what it reads, so they play no part here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from sae import TopKSAE
from steer.lm.models import LoadedModel
from steer.steering import check_latents, sae_layer

from .targets import as_ids


@dataclass
class InputAttribution:
    latent: int
    position: int
    act: float
    """a_j(q) on the whole context."""
    scores: Tensor  # (q + 1,) one score per token 0..q
    drops: dict[int, float] = field(default_factory=dict)
    """token position -> a_j(q) - a_j on the context without that token (checked ones)."""

    def top(self, n: int = 5) -> list[tuple[int, float]]:
        """(token position, score), largest |score| first."""
        order = self.scores.abs().argsort(descending=True)[:n]
        return [(int(t), float(self.scores[t])) for t in order]


def _pre_act(sae: TopKSAE, x: Tensor, latent: int | Tensor) -> Tensor:
    """x (..., d) raw residual -> (...) a latent's activation: for TopK its ReLU'd
    pre-activation (membership held fixed), for elementwise archs the activation itself.
    latent: one index, or one per row of x (a tensor of x's leading shape)."""
    lat = torch.as_tensor(latent, device=sae.device, dtype=torch.long).expand(x.shape[:-1])
    flat, lat = x.reshape(-1, x.shape[-1]), lat.reshape(-1)  # (N, d), (N,)
    if getattr(sae, "is_elementwise", False):
        acts = sae.activations(flat, lat)  # (N, N): row r, column r is row r's latent
        return acts.diagonal().view(x.shape[:-1])
    x_n = sae.normalize(flat) - sae.b_pre  # (N, d)
    pre = (x_n * sae.W_enc[lat]).sum(-1) + sae.b_enc[lat]  # (N,)
    return F.relu(pre).view(x.shape[:-1])


def _embedding_grad(
    lm: LoadedModel, sae: TopKSAE, ids: Tensor, latents: Tensor, positions: Tensor, scale: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Row r reads latents[r] at positions[r] with its embeddings scaled by scale[r].
    ids (T,), latents and positions (R,), scale (R, T).
    -> (act per row (R,), embeddings (T, d), ∂act/∂embedding per row (R, T, d))."""
    held: dict[str, Tensor] = {}

    def hook(_module, _args, output):
        held["e"] = output.detach()[0]  # (T, d)
        held["leaf"] = (output.detach() * scale[..., None].to(output)).requires_grad_(True)
        return held["leaf"]

    R = len(latents)
    handle = lm.model.get_input_embeddings().register_forward_hook(hook)
    try:
        with torch.enable_grad():
            x = lm.residual(ids[None].expand(R, -1).to(lm.device), sae_layer(lm, sae))  # (R, T, d)
            x_read = x[torch.arange(R), positions.to(x.device)].to(sae.device)  # (R, d)
            act = _pre_act(sae, x_read, latents)  # (R,)
            (g,) = torch.autograd.grad(act.sum(), held["leaf"])  # rows are independent
    finally:
        handle.remove()
    return act.detach().cpu(), held["e"], g


def input_attributions(
    lm: LoadedModel,
    sae: TopKSAE,
    ids: Tensor | list[int],
    pairs: list[tuple[int, int]],
    *,
    method: str = "linear",
    steps: int = 10,
    check: int = 3,
) -> list[InputAttribution]:
    """For each (latent, position): score every token 0..position for driving the latent
    there, in one batch; check the strongest `check` tokens (other than the position's
    own) by dropping them."""
    ids = as_ids(ids)
    T = len(ids)
    if method not in ("linear", "ig"):
        raise ValueError(f"unknown attribution method {method!r}: use linear, ig")
    if not pairs:
        return []
    check_latents(sae, [latent for latent, _ in pairs])
    qs = []
    for _, position in pairs:
        q = position + T if position < 0 else position
        if not 0 <= q < T:
            raise ValueError(f"position {position} is out of range for {T} tokens")
        qs.append(q)
    ids = ids[: max(qs) + 1]
    n, s = len(pairs), steps if method == "ig" else 1
    latents = torch.tensor([latent for latent, _ in pairs])
    act, e, g = _embedding_grad(lm, sae, ids, latents, torch.tensor(qs), torch.ones(n, len(ids)))
    if method == "ig":  # row i·s + j is pair i at α_j; position 0, the sink, stays whole
        scale = torch.ones(n * s, len(ids))  # (n·s, T)
        scale[:, 1:] = (torch.arange(1, s + 1) / s).repeat(n)[:, None]
        reps = (latents.repeat_interleave(s), torch.tensor(qs).repeat_interleave(s))
        _, _, g = _embedding_grad(lm, sae, ids, *reps, scale)
    scores = (e * g.view(n, s, *g.shape[1:]).mean(1)).sum(-1).float().cpu()  # (n, T)
    out = []
    for i, ((latent, _), q) in enumerate(zip(pairs, qs, strict=True)):
        res = InputAttribution(latent, q, float(act[i]), scores[i, : q + 1].clone())
        if check > 0:
            others = [t for t, _ in res.top(q + 1) if t != q][:check]
            effects = drop_effects(lm, sae, ids[: q + 1], latent, others)
            res.drops = dict(zip(others, effects, strict=True))
        out.append(res)
    return out


def input_attribution(
    lm: LoadedModel,
    sae: TopKSAE,
    ids: Tensor | list[int],
    latent: int,
    position: int,
    *,
    method: str = "linear",
    steps: int = 10,
    check: int = 3,
) -> InputAttribution:
    """`input_attributions` for one (latent, position)."""
    (out,) = input_attributions(
        lm, sae, ids, [(latent, position)], method=method, steps=steps, check=check
    )
    return out


@torch.inference_mode()
def drop_effects(
    lm: LoadedModel, sae: TopKSAE, ids: Tensor, latent: int, drop: list[int]
) -> list[float]:
    """a_j at the last token of ids, minus its value with each token of `drop` removed."""
    if not drop:
        return []
    ids = as_ids(ids)
    T = len(ids)
    if any(not 0 <= t < T - 1 for t in drop):
        raise ValueError(f"can only drop tokens before the last one (0..{T - 2})")
    rows = torch.stack([ids[[j for j in range(T) if j != t]] for t in drop])  # (c, T - 1)
    layer = sae_layer(lm, sae)
    full = _pre_act(sae, lm.residual(ids[None].to(lm.device), layer)[0, -1].to(sae.device), latent)
    less = _pre_act(sae, lm.residual(rows.to(lm.device), layer)[:, -1].to(sae.device), latent)
    return (full - less).cpu().tolist()
