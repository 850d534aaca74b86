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


def _pre_act(sae: TopKSAE, x: Tensor, latent: int) -> Tensor:
    """x (..., d) raw residual -> (...) one latent's activation: for TopK its ReLU'd
    pre-activation (membership held fixed), for elementwise archs the activation itself."""
    if getattr(sae, "is_elementwise", False):
        return sae.activations(x.reshape(-1, x.shape[-1]), [latent]).view(x.shape[:-1])
    x_n = sae.normalize(x) - sae.b_pre  # (..., d)
    return F.relu(x_n @ sae.W_enc[latent] + sae.b_enc[latent])


def _embedding_grad(
    lm: LoadedModel, sae: TopKSAE, ids: Tensor, latent: int, scale: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """ids (T,), scale (s, T): the embeddings of row r are scaled by scale[r].
    -> (act per row (s,), embeddings (T, d), ∂act/∂embedding per row (s, T, d))."""
    held: dict[str, Tensor] = {}

    def hook(_module, _args, output):
        held["e"] = output.detach()[:1]  # (1, T, d)
        held["leaf"] = (output.detach() * scale[..., None].to(output.dtype)).requires_grad_(True)
        return held["leaf"]

    emb = lm.model.get_input_embeddings()
    handle = emb.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            x = lm.residual(ids[None].expand(scale.shape[0], -1).to(lm.device), sae_layer(lm, sae))
            act = _pre_act(sae, x[:, -1].to(sae.device), latent)  # (s,)
            (g,) = torch.autograd.grad(act.sum(), held["leaf"])
    finally:
        handle.remove()
    return act.detach().cpu(), held["e"][0], g


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
    """Score every token 0..position for driving `latent` at `position`; check the
    strongest `check` tokens (other than the position's own) by dropping them."""
    ids = as_ids(ids)
    check_latents(sae, [latent])
    T = len(ids)
    q = position + T if position < 0 else position
    if not 0 <= q < T:
        raise ValueError(f"position {position} is out of range for {T} tokens")
    if method not in ("linear", "ig"):
        raise ValueError(f"unknown attribution method {method!r}: use linear, ig")
    ids = ids[: q + 1]
    act, e, g = _embedding_grad(lm, sae, ids, latent, torch.ones(1, q + 1))
    if method == "ig" and q > 0:
        scale = torch.ones(steps, q + 1)  # (s, T): position 0, the sink, stays whole
        scale[:, 1:] = (torch.arange(1, steps + 1, dtype=torch.float32) / steps)[:, None]
        _, _, g = _embedding_grad(lm, sae, ids, latent, scale)
    scores = (e * g.mean(0)).sum(-1).float().cpu()  # (q + 1,)
    out = InputAttribution(latent, q, float(act[0]), scores)
    if check > 0:
        others = [t for t, _ in out.top(q + 1) if t != q][:check]
        out.drops = dict(zip(others, drop_effects(lm, sae, ids, latent, others), strict=True))
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
    keep = [[j for j in range(T) if j != t] for t in drop]
    rows = torch.stack([ids[k] for k in keep])  # (c, T - 1)
    layer = sae_layer(lm, sae)
    full = _pre_act(sae, lm.residual(ids[None].to(lm.device), layer)[0, -1].to(sae.device), latent)
    less = _pre_act(sae, lm.residual(rows.to(lm.device), layer)[:, -1].to(sae.device), latent)
    return (full - less).cpu().tolist()
