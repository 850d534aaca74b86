"""Sparsity of ablation effects (Gao et al. 2024, §4.5).

At a token position t of a context, the SAE's active latents are ablated one at a time:
the residual at t becomes x − z_i·d_i (d_i the latent's decoder direction in raw units;
the SAE's reconstruction error stays in, so only latent i changes). The model runs on
from block L and the logits at positions t .. t+horizon−1 are compared with the clean
ones: V logit differences per position. A constant shift of all logits does not change
the probabilities, so the median difference of each position is subtracted; the T·V
numbers are concatenated into one vector v, and its sparsity is

    (‖v‖₁ / ‖v‖₂)²    an "effective number" of logits touched: 1 when one logit moves,
                      T·V when all move alike; lower is sparser.

The paper averages this over many tokens and the latents active at them; it also reports
it as a fraction of T·V, which `ablation_sparsity` returns too.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

from steer.lm.models import block_output


def effect_sparsity(delta: Tensor) -> Tensor:
    """(..., T, V) logit changes -> (...,) (L1/L2)² of the median-centred changes over T·V.

    NaN where nothing changed (no effect has no sparsity)."""
    centred = delta - delta.median(dim=-1, keepdim=True).values  # (..., T, V)
    flat = centred.flatten(-2).double()  # (..., T*V)
    l1 = flat.abs().sum(-1)
    l2 = flat.norm(dim=-1)
    return torch.where(l2 > 0, (l1 / l2.clamp_min(1e-300)) ** 2, torch.nan)


def _amp(lm, autocast: bool):
    """A context factory: bf16 autocast for an fp32 model when asked, else nothing."""
    use_autocast = autocast and lm.dtype == torch.float32 and lm.device.type in ("cpu", "cuda")
    return (
        (lambda: torch.autocast(lm.device.type, dtype=torch.bfloat16))
        if use_autocast
        else contextlib.nullcontext
    )


def _ablate_each_active(lm, sae, row: Tensor, t: int, captured: dict, edits: dict, amp):
    """Ablate, one per row of a batch, every latent active at position t of row (1, t + h):
    ((m,) sparsities of their effects on the logits from t on, V), or None when no latent
    is active there. The forward hook reads `edits` and fills `captured`."""
    edits.pop("edit", None)
    with amp():
        clean = _logits(lm, row)[0, t:]  # (h, V)
    x = captured["x"][0, t].float()  # (d,)
    with torch.autocast(lm.device.type, enabled=False):
        z = sae.encode_dense(x[None].to(sae.device, sae.dtype))[0]  # (n,)
    active = torch.nonzero(z > 0).flatten()
    if not len(active):
        return None
    dirs = sae.decoder_directions(active).float()  # (m, d) raw units per unit
    edits["edit"] = (t, (z[active, None].float() * dirs).to(lm.device))
    with amp():
        ablated = _logits(lm, row.expand(len(active), -1))[:, t:]  # (m, h, V)
    return effect_sparsity(ablated - clean).cpu(), clean.shape[-1]


def _logits(lm, ids: Tensor) -> Tensor:
    """Logits (B, T, V) of ids (B, T); the hook on block L edits the residual."""
    return lm.model(input_ids=ids, use_cache=False).logits.float()


@torch.inference_mode()
def ablation_sparsity(
    lm,
    sae,
    layer: int,
    contexts: Tensor,
    positions: int = 4,
    horizon: int = 8,
    seed: int = 0,
    autocast: bool = False,
) -> dict:
    """Mean ablation sparsity of `sae` over `positions` random positions of each context
    (B, T) and every latent active there.

    Returns {"sparsity": mean (L1/L2)², "fraction": the same / (horizon·V), "ablations":
    how many (position, latent) pairs were measured, "horizon", "vocab"}."""
    if contexts.ndim != 2 or contexts.shape[1] < horizon + 2:
        raise ValueError(f"contexts must be (B, T) with T >= horizon + 2 = {horizon + 2}")
    if positions < 1 or horizon < 1:
        raise ValueError("positions and horizon must be positive")
    gen = torch.Generator().manual_seed(seed)
    captured: dict = {}
    edits: dict = {}

    def hook(_module, _args, output):
        resid = block_output(output)  # (B, T, d)
        if "edit" not in edits:
            captured["x"] = resid.detach()
            return output
        t, delta = edits["edit"]  # delta (B, d): what to subtract at position t
        new = resid.clone()
        new[:, t] -= delta.to(resid.dtype)
        return (new, *output[1:]) if isinstance(output, tuple) else new

    amp = _amp(lm, autocast)
    scores: list[Tensor] = []
    vocab = 0
    handle = lm.block(layer).register_forward_hook(hook)
    try:
        for ids in contexts:
            span = ids.shape[0] - horizon  # positions 1 .. T - horizon can be ablated
            ts = 1 + torch.randperm(span - 1 if span > 1 else 1, generator=gen)[:positions]
            for t in sorted(ts.tolist()):
                row = ids[None, : t + horizon].to(lm.device)  # (1, t + h)
                measured = _ablate_each_active(lm, sae, row, t, captured, edits, amp)
                if measured is not None:
                    vocab = measured[1]
                    scores.append(measured[0])
    finally:
        handle.remove()
    if not scores:
        raise ValueError("no latent was active at the sampled positions")
    s = torch.cat(scores)
    s = s[~torch.isnan(s)]
    mean = float(s.mean()) if len(s) else float("nan")
    return {
        "sparsity": mean,
        "fraction": mean / (horizon * vocab),
        "ablations": int(len(s)),
        "horizon": horizon,
        "vocab": vocab,
    }
