"""Logit lens: the tokens whose logits a decoder direction raises and lowers most.

A latent adds dir_i = W_dec[i] to a residual whose norm is much larger, so what it
changes in the logits is the linear part of the final norm applied to dir_i:
    logits_i = W_U (g ⊙ center(dir_i))
with g the norm's weight (1 + weight for Gemma), center() the mean subtraction of a
LayerNorm (identity for RMSNorm). The norm's bias and its division by the residual's
RMS are left out: the bias does not depend on the latent, and the RMS is a positive
scalar that does not change which tokens rank first.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from steer.lm.models import LoadedModel


def logit_lens(
    lm: LoadedModel, directions: Tensor, n: int = 10, chunk: int = 1024, fast: bool = True
) -> tuple[Tensor, Tensor]:
    """Top and bottom n token ids (m, n) of each direction (m, d), see the module docstring."""
    norm = lm.final_norm
    weight = getattr(norm, "weight", None)
    w_u = lm.unembed.weight.detach()  # (V, d)
    dtype = torch.bfloat16 if fast and w_u.dtype == torch.float32 else w_u.dtype
    w_u = w_u.to(dtype)
    gain = None
    if weight is not None:
        gain = weight.detach().float() + (1.0 if "gemma" in type(norm).__name__.lower() else 0.0)
    centered = isinstance(norm, nn.LayerNorm) or getattr(norm, "bias", None) is not None
    tops, bottoms = [], []
    for start in range(0, directions.shape[0], chunk):
        v = directions[start : start + chunk].detach().float().to(w_u.device)  # (c, d)
        if centered:
            v = v - v.mean(dim=-1, keepdim=True)
        if gain is not None:
            v = v * gain.to(v.device)
        logits = v.to(dtype) @ w_u.T  # (c, V)
        tops.append(logits.topk(n, dim=-1).indices.cpu())
        bottoms.append(logits.topk(n, dim=-1, largest=False).indices.cpu())
    return torch.cat(tops), torch.cat(bottoms)
