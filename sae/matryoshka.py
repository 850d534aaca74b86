"""Matryoshka TopK SAEs (Bussmann, Nabeshima, Karvonen & Nanda 2025, arXiv 2503.17547).

One dictionary of n latents with nested levels m_1 < m_2 < ... < m_L = n (cfg.matryoshka).
The first m_j latents form a complete SAE on their own, so early latents must carry the
general features and later ones refine them. Training loss: the mean over levels of the
FVU of each prefix alone, L = (1/L) Σ_j ‖x − x̂_{≤m_j}‖² / Var(x). The paper sums; the mean
keeps the loss (and gradient clipping at norm 1) on the scale of a plain TopK SAE.

Sparsity: TopK per prefix, not the paper's BatchTopK. Prefix m encodes with the top k of
its own m latents, exactly as `prefix_sae(sae, m)` (the `DIR@m` an SAE path may name) does
at inference. So every prefix is an ordinary TopK SAE, bit for bit the one trained, and
every command (steering, catalog, evaluation, export) reads it unchanged. A shared
BatchTopK selection would leave a prefix fewer than k latents on some tokens and need a
learned threshold at inference, a second encoder kind across the whole toolchain. The cost
is one encoder product per level: Σ_j m_j ≤ 2n rows instead of n.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from .kernels import TopKEncode, selection_dtype, sparse_decode, sparse_ok
from .metrics import total_variance
from .model import CONFIG_FILE, ForwardOutput, TopKSAE

PREFIX_SEP = "@"


def check_levels(levels: list[int], n_latents: int, k: int) -> list[int]:
    """Validate nested level sizes: strictly increasing, each ≥ k, the last = n_latents."""
    levels = [int(m) for m in levels]
    if not levels:
        return []
    if any(b <= a for a, b in zip(levels, levels[1:], strict=False)):
        raise ValueError(f"matryoshka levels must be strictly increasing, got {levels}")
    if levels[0] < k:
        raise ValueError(f"matryoshka level {levels[0]} is smaller than k={k}")
    if levels[-1] != n_latents:
        raise ValueError(
            f"the last matryoshka level must be the SAE's width {n_latents}, got {levels[-1]}"
        )
    return levels


def split_prefix(path: str | Path) -> tuple[Path, int | None]:
    """`DIR@2304` -> (DIR, 2304); a plain folder (even one with '@' in its name) -> (DIR, None)."""
    text = str(path)
    folder, sep, tail = text.rpartition(PREFIX_SEP)
    if not sep or not tail.isdigit() or "/" in tail or Path(text).exists():
        return Path(text), None
    return Path(folder), int(tail)


def prefix_path(folder: str | Path, m: int) -> str:
    return f"{folder}{PREFIX_SEP}{m}"


def matryoshka_levels(folder: str | Path) -> list[int]:
    """The levels of the Matryoshka SAE in `folder` from its cfg.json ([] if none/unreadable)."""
    try:
        levels = json.loads((Path(folder) / CONFIG_FILE).read_text()).get("matryoshka") or []
        return [int(m) for m in levels]
    except (OSError, ValueError, TypeError, AttributeError):
        return []


def prefix_sae(sae: TopKSAE, m: int) -> TopKSAE:
    """The first m latents of a Matryoshka SAE as a TopK SAE of its own (weights copied)."""
    levels = sae.cfg.matryoshka
    if not levels:
        raise ValueError(
            f"@{m}: this SAE ({sae.n_latents} latents) is not a Matryoshka SAE, it has no prefixes"
        )
    if m not in levels:
        raise ValueError(f"@{m}: not a level of this Matryoshka SAE (levels: {levels})")
    if m == sae.n_latents:
        return sae
    extra = {**sae.cfg.extra, "matryoshka_prefix": m, "matryoshka_of": sae.n_latents}
    cfg = replace(sae.cfg, n_latents=m, matryoshka=[lv for lv in levels if lv <= m], extra=extra)
    out = TopKSAE(cfg, device="meta", dtype=sae.dtype)
    state = {
        "W_enc": sae.W_enc[:m],
        "W_dec": sae.W_dec[:m],
        "b_enc": sae.b_enc[:m],
        "b_pre": sae.b_pre,
    }
    out.load_state_dict({n: t.detach().clone() for n, t in state.items()}, assign=True)
    out.selection_dtype = sae.selection_dtype
    return out


def _prefix_recon(sae: TopKSAE, x_n: Tensor, m: int) -> Tensor:
    """Reconstruction (N, d), normalised space, by the top k of the first m latents alone."""
    W_enc, b_enc, W_dec = sae.W_enc[:m], sae.b_enc[:m], sae.W_dec[:m]  # views: grads flow
    if sparse_ok(x_n):
        select = sae.selection_dtype or (
            selection_dtype(x_n.device) if sae.dtype == torch.float32 else sae.dtype
        )
        acts, idx, _ = TopKEncode.apply(x_n, sae.b_pre, W_enc, b_enc, sae.k, False, None, select)
    else:  # plain autograd for dtypes the sparse kernels do not take
        pre = F.relu(F.linear(x_n - sae.b_pre, W_enc, b_enc))  # (N, m)
        acts, idx = pre.topk(sae.k, dim=-1, sorted=False)  # (N, k)
    return sparse_decode(acts, idx, W_dec) + sae.b_pre


def nested_forward(
    sae: TopKSAE, x: Tensor, dead_mask: Tensor | None = None, k_aux: int | None = None
) -> tuple[ForwardOutput, Tensor]:
    """The full SAE's ForwardOutput (with AuxK on the whole dictionary) and the FVU of every
    level (L,), narrowest first; the last is out.fvu. Training loss: level FVUs' mean."""
    out = sae(x, dead_mask=dead_mask, k_aux=k_aux)
    x_n = sae.normalize(x)  # (N, d)
    total_var = total_variance(x_n)
    fvus = [
        (x_n - _prefix_recon(sae, x_n, m)).pow(2).sum() / total_var for m in sae.cfg.matryoshka[:-1]
    ]
    return out, torch.stack([*fvus, out.fvu])
