"""The activation functions of the SAE architectures this library runs.

With x_c = s·x − b_pre (s = cfg.input_scale) and pre = W_enc x_c + b_enc:

    topk      z = TopK_k(ReLU(pre))                                   Gao et al. 2024
    relu      z = ReLU(pre)                 SAELens "standard"; Bricken et al. 2023
    jumprelu  z = ReLU(pre) · [pre > θ]     θ (n,) per-latent thresholds; Gemma Scope
                                            (Rajamanoharan et al. 2024b). A BatchTopK SAE
                                            runs at inference as JumpReLU with θ_i = its
                                            batch threshold (SAELens saves it that way).
    gated     z = [π_gate > 0] · ReLU(π_mag)   π_gate = W_enc x_c + b_enc,
                                            π_mag = exp(r_mag) ⊙ (W_enc x_c) + b_mag
                                            (Rajamanoharan et al. 2024a; b_enc is b_gate)

Every architecture decodes the same way, x̂ = (W_decᵀ z + b_pre) / s. All but topk are
elementwise: latent i's activation depends on its own encoder row only, so the
activations of a few latents cost a few rows of W_enc (steering's clamp relies on it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

ARCHS = ("topk", "relu", "jumprelu", "gated")


def arch_params(arch: str, n_latents: int) -> dict[str, tuple[int, ...]]:
    """Parameters an architecture has besides W_enc, b_enc, W_dec, b_pre, with shapes."""
    if arch == "jumprelu":
        return {"threshold": (n_latents,)}
    if arch == "gated":
        return {"r_mag": (n_latents,), "b_mag": (n_latents,)}
    return {}


def elementwise_acts(
    arch: str, x_c: Tensor, W: Tensor, b: Tensor, extra: dict[str, Tensor]
) -> Tensor:
    """Activations (N, m) of m latents for centred inputs x_c (N, d), given their encoder
    rows W (m, d), biases b (m,) and the `arch_params` restricted to the same m latents."""
    if arch == "gated":
        pi = F.linear(x_c, W)  # (N, m), shared by both paths
        gate = (pi + b) > 0
        return F.relu(pi * extra["r_mag"].exp() + extra["b_mag"]) * gate
    pre = F.linear(x_c, W, b)  # (N, m)
    if arch == "relu":
        return F.relu(pre)
    if arch == "jumprelu":
        return F.relu(pre) * (pre > extra["threshold"])
    raise ValueError(f"architecture {arch!r} is not elementwise")


def sparse_codes(z: Tensor, k: int | None = None) -> tuple[Tensor, Tensor]:
    """Dense codes z (N, n) -> (acts, indices), each (N, K): every latent active on some
    token of the batch fits (K = the largest count of active latents of a token); tokens
    with fewer are padded with zero activations, which decode to nothing. `k` caps K."""
    active = int(z.gt(0).sum(dim=-1).max()) if z.numel() else 0
    width = max(1, active) if k is None else min(k, z.shape[-1])
    acts, indices = z.topk(min(width, z.shape[-1]), dim=-1, sorted=False)
    return acts, indices


def concat_codes(acts: list[Tensor], indices: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Concatenate sparse codes of several batches along dim 0. Non-TopK codes differ in
    width from batch to batch; the narrower ones are padded with zero activations."""
    width = max(a.shape[-1] for a in acts)

    def pad(t: Tensor) -> Tensor:
        return F.pad(t, (0, width - t.shape[-1]))  # zeros: act 0 at latent 0, decodes to nothing

    return torch.cat([pad(a) for a in acts]), torch.cat([pad(i) for i in indices])
