"""Checked, not trusted: the exact effects that attribution estimates.

`ablation_effects` ablates each latent with the steering machinery (a `SteeringHook` in
mode ablate, one batch row per latent) and returns m(context) - m(latent ablated): the
quantity a latent's attribution score estimates. `error_effect` does the same for the
SAE's error term (the residual replaced by the SAE's reconstruction).

Both ablate at positions >= `first`, like the attribution they check: the hook's
"generated" positions with prompt_len = first + 1 are exactly those positions. Levers, when
given, run first on every row, so the check sees the residual the attribution saw.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

from sae import TopKSAE
from steer.lm.models import LoadedModel, block_output
from steer.steering import Intervention, SteeringHook, sae_layer

from .targets import Target, as_ids


def _metric_rows(
    lm: LoadedModel, ids: Tensor, rows: int, hooks: list[SteeringHook], target: Target
) -> Tensor:
    """m for `rows` copies of ids (T,) with the hooks applied in order. -> (rows,)"""
    for hook in hooks:
        hook.reset(0)
    with contextlib.ExitStack() as stack:
        for hook in hooks:
            stack.enter_context(hook)
        out = lm.model(
            input_ids=ids[None].expand(rows, -1).to(lm.device), use_cache=False, logits_to_keep=1
        )
    return target.metric(out.logits[:, -1].double()).cpu()


@torch.inference_mode()
def ablation_effects(
    lm: LoadedModel,
    sae: TopKSAE,
    ids: Tensor | list[int],
    target: Target,
    latents: list[int],
    *,
    first: int = 1,
    levers: SteeringHook | None = None,
    batch: int = 16,
) -> Tensor:
    """(len(latents),) m(context) - m(latent ablated at every position >= first)."""
    ids = as_ids(ids)[: target.read_at + 1]
    first = min(first, target.read_at)
    before = [levers] if levers is not None else []
    effects = []
    for start in range(0, len(latents), batch):
        chunk = latents[start : start + batch]
        rows = [[]] + [[Intervention(int(i), mode="ablate")] for i in chunk]
        ablate = SteeringHook(
            lm, sae, rows, positions="generated", prompt_len=first + 1, encode_dtype=None
        )
        m = _metric_rows(lm, ids, len(rows), before + [ablate], target)  # (1 + c,)
        effects.append(m[0] - m[1:])  # each chunk has its own clean row: same batch numerics
    return torch.cat(effects) if effects else torch.zeros(0)


@torch.inference_mode()
def error_effect(
    lm: LoadedModel,
    sae: TopKSAE,
    ids: Tensor | list[int],
    target: Target,
    *,
    first: int = 1,
    levers: SteeringHook | None = None,
) -> float:
    """m(context) - m(residual replaced by the SAE's reconstruction at positions >= first)."""
    ids = as_ids(ids)[: target.read_at + 1]
    first = min(first, target.read_at)
    layer = sae_layer(lm, sae)

    def reconstruct(_module, _args, output):
        x = block_output(output)  # (2, T, d): row 0 clean, row 1 reconstructed
        x_hat = sae.decode(*sae.encode(x[1, first:].to(sae.device)))  # (T - first, d)
        new = x.clone()
        new[1, first:] = x_hat.to(x.dtype)
        return (new, *output[1:]) if isinstance(output, tuple) else new

    hooks = [levers] if levers is not None else []
    with contextlib.ExitStack() as stack:
        for hook in hooks:
            hook.reset(0)
            stack.enter_context(hook)
        handle = lm.block(layer).register_forward_hook(reconstruct)
        stack.callback(handle.remove)
        out = lm.model(
            input_ids=ids[None].expand(2, -1).to(lm.device), use_cache=False, logits_to_keep=1
        )
    m = target.metric(out.logits[:, -1].double())
    return float(m[0] - m[1])
