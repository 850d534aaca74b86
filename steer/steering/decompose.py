"""What a direction is made of: a vector written as a few SAE decoder directions.

Orthogonal matching pursuit (Pati et al. 1993) over the decoder's rows: start with the
residual r = v; at each step pick the latent whose unit direction is most aligned with r
(either sign), refit the weights of every picked latent by least squares, and recompute
r = v - sum_i w_i dir_i. After n steps

    explained(n) = 1 - |v - sum_i w_i dir_i|^2 / |v|^2

is the share of the vector's squared norm that n features account for. Weights are
signed: a contrastive vector is "positive prompts minus negative prompts", so latents of
the negative side enter with negative weight (steering with them means adding less of
them, an `add` with negative strength). The weights are in raw latent units (w_i · dir_i is
the residual that latent contributes), so a vector at strength s is reproduced by adding
each latent at s·w_i raw units; `feature_strengths` turns that into the units
`--feature ID=S:add` takes (multiples of the latent's max activation).

Why OMP and not the SAE's encoder: the encoder reads activations (with their mean and
bias), not differences of activations; a direction is a difference, and the encoder's
TopK code of it says which latents would fire on it, not how to rebuild it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from sae import TopKSAE

from .plan import strength_scales


@dataclass
class Part:
    latent: int
    weight: float
    """Raw latent units: the latent contributes weight · dir_latent to the vector."""


@dataclass
class Decomposition:
    parts: list[Part]
    """In the order OMP picked them (the most explanatory first)."""
    explained: list[float]
    """explained[j]: the share of |v|^2 the first j+1 parts explain together."""
    norm: float
    """|v|, raw residual units."""

    @property
    def fraction(self) -> float:
        return self.explained[-1] if self.explained else 0.0


@torch.no_grad()
def decompose(sae: TopKSAE, vector: Tensor, n: int = 10, tol: float = 1e-6) -> Decomposition:
    """The first n latents OMP picks for `vector` (d,), raw residual units; stops early
    once the vector is explained to within `tol` (of its squared norm)."""
    v = torch.as_tensor(vector, dtype=torch.float32).flatten().to(sae.device)  # (d,)
    if v.numel() != sae.d_in:
        raise ValueError(f"the vector has {v.numel()} dimensions but the SAE reads {sae.d_in}")
    if n < 1:
        raise ValueError(f"the number of features must be positive, got {n}")
    total = float(v @ v)
    if not total > 0:
        raise ValueError("the vector is zero: nothing to decompose")
    dirs = sae.decoder_directions(torch.arange(sae.n_latents, device=sae.device)).float()
    norms = dirs.norm(dim=-1).clamp(min=1e-12)  # (n_latents,)
    units = dirs / norms[:, None]  # (n_latents, d)
    picked: list[int] = []
    explained: list[float] = []
    coef = torch.zeros(0, device=v.device)
    r = v
    for _ in range(min(n, sae.n_latents, v.numel())):
        score = (units @ r).abs()  # (n_latents,)
        if picked:
            score[torch.tensor(picked, device=score.device)] = -1.0
        picked.append(int(score.argmax()))
        basis = units[picked].T  # (d, j)
        coef = torch.linalg.lstsq(basis, v[:, None]).solution[:, 0]  # (j,)
        r = v - basis @ coef
        explained.append(1.0 - float(r @ r) / total)
        if 1.0 - explained[-1] <= tol:
            break
    weights = (coef / norms[picked]).tolist()  # unit-direction coefficients -> latent units
    parts = [Part(i, w) for i, w in zip(picked, weights, strict=True)]
    return Decomposition(parts, explained, total**0.5)


def feature_strengths(
    parts: list[Part], max_acts: Tensor | None, vector_strength: float = 1.0
) -> list[float]:
    """Each part's `add` strength (in `--feature ID=S:add` units: multiples of its max
    activation, raw units without max activations) that reproduces the vector at
    `vector_strength` (in the vector's units)."""
    scales = strength_scales([p.latent for p in parts], max_acts)  # raw units per strength
    return [vector_strength * p.weight / float(s) for p, s in zip(parts, scales, strict=True)]
