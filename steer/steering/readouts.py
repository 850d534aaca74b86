"""Per-token readouts of SAE latents: what fires where, for the UI and `steer features`.

The residual is read unsteered (a plain forward up to the SAE's block), so a readout says
what the model itself computes on the tokens, whatever was steered to produce them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sae import EncoderOutput, TopKSAE
from steer.lm.models import LoadedModel

from .intervention import check_latents, sae_layer


def _ids(token_ids: Tensor | list[int]) -> Tensor:
    ids = torch.as_tensor(token_ids, dtype=torch.long).flatten()
    if ids.numel() == 0:
        raise ValueError("no tokens to read: the text is empty")
    return ids


@torch.inference_mode()
def latent_codes(lm: LoadedModel, sae: TopKSAE, token_ids: Tensor | list[int]) -> EncoderOutput:
    """TopK code of every token: top_acts, top_indices, each (T, k), on the SAE's device."""
    ids = _ids(token_ids).to(lm.device)
    resid = lm.residual(ids[None], sae_layer(lm, sae))[0]  # (T, d)
    return sae.encode(resid.to(sae.device))


def feature_activations(
    lm: LoadedModel, sae: TopKSAE, token_ids: Tensor | list[int], latents: list[int]
) -> Tensor:
    """Activations of `latents` on every token: (T, len(latents)) float32 on the CPU."""
    check_latents(sae, latents)
    top_acts, top_idx = latent_codes(lm, sae, token_ids)  # (T, k)
    wanted = torch.as_tensor(latents, dtype=torch.long, device=top_idx.device)  # (m,)
    hit = top_idx.unsqueeze(-1) == wanted  # (T, k, m)
    return (top_acts.unsqueeze(-1) * hit).sum(dim=1).float().cpu()


def max_over_tokens(sae: TopKSAE, codes: EncoderOutput, skip_first: bool = True) -> Tensor:
    """Dense (n_latents,) max activation over the tokens of one code.

    The first token is skipped when there are others: its residual is an attention sink
    with a huge norm, and its latents say little about the text.
    """
    top_acts, top_idx = codes
    if skip_first and top_acts.shape[0] > 1:
        top_acts, top_idx = top_acts[1:], top_idx[1:]
    out = torch.zeros(sae.n_latents, device=top_acts.device, dtype=torch.float32)
    return out.scatter_reduce(0, top_idx.flatten(), top_acts.flatten().float(), "amax")


def top_features(
    lm: LoadedModel,
    sae: TopKSAE,
    token_ids: Tensor | list[int],
    n: int = 20,
    position: int | None = None,
) -> list[tuple[int, float]]:
    """The n most active latents, strongest first, as (latent, activation).

    position: a token index (negative counts from the end) for the latents active there;
    None for the max over the whole text (first token skipped, see `max_over_tokens`).
    """
    codes = latent_codes(lm, sae, token_ids)
    if position is not None:
        T = codes.top_acts.shape[0]
        if not -T <= position < T:
            raise ValueError(f"position {position} is out of range for {T} tokens")
        acts, idx = codes.top_acts[position], codes.top_indices[position]  # (k,)
    else:
        dense = max_over_tokens(sae, codes)
        acts, idx = dense.topk(min(n, dense.numel()))
    order = acts.argsort(descending=True)[:n]
    return [(int(idx[i]), float(acts[i])) for i in order if float(acts[i]) > 0]
