"""Checked, not trusted: what ablating a circuit's nodes does to the metric.

`ablate_nodes` runs one batch: row 0 is the clean context, each further row ablates one
group of nodes, and returns m(clean) - m(group ablated), the quantity a node's effect A
estimates (for a group at one depth, Σ A). Ablation is done in the run itself: at each
depth the row's residual is encoded by that depth's SAE and the group's latents there
are removed (x -= z_i(p) · dir_i with z_i as the row computes it), its error node puts
x̂ in place of x at positions >= first, a token node zeroes that token's embedding.
`checks` pairs predictions with measurements for the CLI, the benchmark and the tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from sae import TopKSAE
from steer.lm.models import LoadedModel, block_output

from .circuit import Circuit, Node, check_saes
from .passes import _replace, _stage_module
from .targets import Target, as_ids


@dataclass
class Check:
    name: str
    """A node's id, or "L<layer> kept" for the kept latents of a depth together."""
    predicted: float
    """Σ A of the ablated nodes."""
    measured: float
    """m(clean) - m(ablated)."""


def _ablate_rows(x: Tensor, rows: list[list[Node]], sae: TopKSAE | None, first: int) -> Tensor:
    """x (R, T, d) with each row's nodes at this stage removed (row r uses rows[r - 1])."""
    new = x.clone()
    for r, group in enumerate(rows, 1):
        if not group:
            continue
        if sae is None:  # the embeddings: tokens
            for node in group:
                new[r, node.pos] = 0.0
            continue
        x_r = x[r, first:].to(sae.device, sae.dtype)  # (T - first, d)
        acts, idx = sae.encode(x_r)  # (T - first, K)
        delta = torch.zeros_like(x_r)
        for node in group:
            if node.kind == "error":
                delta += x_r - sae.decode(acts, idx)
            else:
                i = node.pos - first
                z = (acts[i] * (idx[i] == node.feature)).sum()
                delta[i] += z * sae.decoder_directions([node.feature])[0]
        new[r, first:] -= delta.to(new.dtype)
    return new


@torch.inference_mode()
def ablate_nodes(
    lm: LoadedModel,
    saes: list[TopKSAE],
    ids: Tensor | list[int],
    target: Target,
    groups: list[list[Node]],
    *,
    first: int = 1,
) -> Tensor:
    """(len(groups),) m(clean) - m(the group's nodes ablated), one batched forward."""
    ids = as_ids(ids)[: target.read_at + 1]
    first = min(first, target.read_at)
    if not groups:
        return torch.zeros(0)
    by_layer = dict(check_saes(lm, saes))
    stages = {n.layer for g in groups for n in g if n.kind != "output"}
    if missing := sorted(s for s in stages if s is not None and s not in by_layer):
        raise ValueError(f"no SAE given for resid_post.{missing[0]}")
    handles = []
    for stage in stages:
        rows = [[n for n in g if n.layer == stage and n.kind != "output"] for g in groups]
        sae = by_layer.get(stage) if stage is not None else None

        def hook(_module, _args, output, rows=rows, sae=sae):
            return _replace(output, _ablate_rows(block_output(output), rows, sae, first))

        handles.append(_stage_module(lm, stage).register_forward_hook(hook))
    try:
        R = len(groups) + 1
        out = lm.model(
            input_ids=ids[None].expand(R, -1).to(lm.device), use_cache=False, logits_to_keep=1
        )
    finally:
        for h in handles:
            h.remove()
    m = target.metric(out.logits[:, -1].double()).cpu()  # (R,)
    return m[0] - m[1:]


def checks(
    lm: LoadedModel,
    saes: list[TopKSAE],
    ids: Tensor | list[int],
    circuit: Circuit,
    top: int = 5,
) -> list[Check]:
    """The `top` nodes of largest |effect| (latents, errors, tokens) one at a time, then
    each depth's kept latents together: predicted against measured, one batched forward."""
    candidates = [n for n in circuit.nodes if n.kind != "output"]
    single = sorted(candidates, key=lambda n: -abs(n.effect))[:top]
    groups = [[n] for n in single]
    names = [n.id for n in single]
    for layer in circuit.layers:
        kept = [n for n in circuit.nodes if n.kind == "latent" and n.layer == layer]
        if kept:
            groups.append(kept)
            names.append(f"L{layer} kept")
    measured = ablate_nodes(lm, saes, ids, circuit.target, groups, first=circuit.first)
    return [
        Check(name, sum(n.effect for n in g), float(v))
        for name, g, v in zip(names, groups, measured.tolist(), strict=True)
    ]
