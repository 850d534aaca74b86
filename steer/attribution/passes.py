"""The forward and backward passes a feature circuit is built from.

`gradients_everywhere`: one forward of the whole model with a zero "probe" added to the
input embeddings and to the output of every SAE block; one backward of the metric gives
∂m/∂(embedding) and ∂m/∂x_L at every depth at once (the residuals are kept too).

`upstream_gradients`: the Jacobian rows an edge needs. The model runs once, batch 1, up
to the upstream stage (the embeddings, or block a); there the residual is replaced by a
leaf expanded to R rows (one per downstream node), the forward goes on only until block
b, where each row reads its own scalar (a latent's activation, or the error term weighted
by ∂m/∂x_b); one backward of their sum gives every row's gradient w.r.t. the upstream
residual: R Jacobian-vector products for the price of one batched pass over a..b.

`reconstruct`: x̂(x) as a differentiable function with the TopK membership of the clean
run held fixed (what attribution patching and the steering hook's ablation assume).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from sae import TopKSAE
from steer.lm.models import LoadedModel, block_output

from .targets import Target


class _Stop(Exception):
    def __init__(self, output: Tensor):
        self.output = output


def _replace(output, x: Tensor):
    return (x, *output[1:]) if isinstance(output, tuple) else x


def _base_model(lm: LoadedModel):
    """The transformer without its LM head (the module that holds the blocks)."""
    return lm.model.get_submodule(lm.blocks_path.rsplit(".", 1)[0])


def _stage_module(lm: LoadedModel, stage: int | None):
    """None: the input embeddings; L: block L."""
    return lm.model.get_input_embeddings() if stage is None else lm.block(stage)


def gradients_everywhere(
    lm: LoadedModel, ids: Tensor, layers: list[int], target: Target
) -> tuple[float, dict, dict]:
    """ids (T,) run up to the target's read position.
    -> (m, values {stage: (T, d)}, grads {stage: (T, d)}); stage None = the embeddings."""
    held: dict = {}

    def probe(stage):
        def hook(_module, _args, output):
            x = block_output(output)  # (1, T, d)
            zero = torch.zeros_like(x, requires_grad=True)
            held[stage] = (x.detach()[0], zero)
            return _replace(output, x + zero)

        return hook

    handles = [
        _stage_module(lm, s).register_forward_hook(probe(s)) for s in [None, *sorted(layers)]
    ]
    try:
        with torch.enable_grad():
            out = lm.model(input_ids=ids[None].to(lm.device), use_cache=False, logits_to_keep=1)
            m = target.metric(out.logits[0, -1])
            stages = list(held)
            grads = torch.autograd.grad(m, [held[s][1] for s in stages])
    finally:
        for h in handles:
            h.remove()
    values = {s: held[s][0] for s in stages}
    return float(m.detach()), values, {s: g[0] for s, g in zip(stages, grads, strict=True)}


def upstream_gradients(
    lm: LoadedModel,
    ids: Tensor,
    upstream: int | None,
    downstream: int,
    rows: int,
    readout: Callable[[Tensor], Tensor],
) -> Tensor:
    """Row r of the result is ∂ readout(x_b)[r] / ∂ x_a for the upstream stage a (None:
    the embeddings) and the downstream block b > a. readout: (R, T, d) -> (R,).
    -> (R, T, d)"""
    held: dict[str, Tensor] = {}

    def expand(_module, _args, output):
        x = block_output(output)  # (1, T, d)
        held["leaf"] = x.detach().expand(rows, *x.shape[1:]).clone().requires_grad_(True)
        return _replace(output, held["leaf"])

    def stop(_module, _args, output):
        raise _Stop(block_output(output))

    handles = [
        _stage_module(lm, upstream).register_forward_hook(expand),
        lm.block(downstream).register_forward_hook(stop),
    ]
    x_b = None
    try:
        with torch.enable_grad():
            try:
                _base_model(lm)(input_ids=ids[None].to(lm.device), use_cache=False)
            except _Stop as stopped:
                x_b = stopped.output  # (R, T, d)
            if x_b is None:
                raise RuntimeError("the forward pass ended before the downstream block")
            (g,) = torch.autograd.grad(readout(x_b).sum(), held["leaf"])  # rows independent
    finally:
        for h in handles:
            h.remove()
    return g


def reconstruct(sae: TopKSAE, x: Tensor, idx: Tensor) -> Tensor:
    """x̂ (N, d) in raw units for raw x (N, d), differentiable in x. TopK: the active set
    idx (N, K) of the clean run held fixed (ReLU'd pre-activations at those indices);
    elementwise archs: every latent, as they are (their gates have zero gradient)."""
    if sae.is_elementwise:
        x_hat_n = sae.activations(x) @ sae.W_dec + sae.b_pre  # (N, d)
    else:
        x_c = sae.normalize(x) - sae.b_pre  # (N, d)
        pre = torch.einsum("nd,nkd->nk", x_c, sae.W_enc[idx]) + sae.b_enc[idx]  # (N, K)
        x_hat_n = torch.einsum("nk,nkd->nd", torch.relu(pre), sae.W_dec[idx]) + sae.b_pre
    return x_hat_n / sae.cfg.input_scale
