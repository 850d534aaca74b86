"""Output scores: does adding a latent's direction make the model *say* something?

Arad, Mueller & Belinkov 2025 (arXiv 2505.20063; GUIDE.md §7) find that the features that
steer are the ones whose direction, added to the residual, moves the next-token
distribution onto the feature's own tokens (output features), and that these are rarely
the features that fire on a concept (input features). Their output score reads the
feature's tokens from the logit lens; at a middle layer of a small model the lens says
little (toward.py: " dog"'s best lens z-score is chance level), so the tokens here are
*measured*, the way the score itself is:

for every latent i and a few neutral chat prompts, add `ALPHA` × (the median residual norm
at the SAE's layer) × its unit direction at the prompt's last position (the one that
predicts the reply's first token) and read the next-token distribution q_i; with p the
unsteered one,
    tokens_i = the K tokens with the largest mean rise q_i(t) − p(t) over the prompts,
    score_i  = Σ_{t ∈ tokens_i} mean over prompts of (q_i(t) − p(t)),
the share of the next-token probability the feature moves onto its own tokens, the same
tokens whatever the prompt (0: moves nothing, or nothing consistent; 1: the reply starts
with one of its tokens whatever was asked). Catalog search and `steer features` rank and
filter by it; `steer features --toward` reads candidates from tokens_i.

Cost: one token through the model per (latent, prompt), the prompt's prefix computed once
and shared by a batch of latents: 9216 latents × 3 prompts in a few minutes on a CPU.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from sae import TopKSAE
from steer.lm.kv import cache_kwargs, output_cache
from steer.lm.models import LoadedModel, block_output
from steer.steering import sae_layer
from steer.steering.coherence import expand_cache
from steer.steering.generate import build_prompt_ids

OUTPUT_PROMPTS = (
    ("Tell me something.", "Sure! Let me tell you about"),
    ("Write one sentence.", "Here is a sentence about"),
    ("What do you like?", "I really like"),
)
"""Neutral (question, reply so far) pairs whose next token is an open content word, so a
feature's direction can put any topic there; without the reply's start the next token is
the reply's first ("Sure", "Hello"), and any strong push only breaks that habit."""

FLOOR = 1e-4
"""Tokens are chosen by log((q + FLOOR) / (p + FLOOR)): a token the feature makes likely
from unlikely ranks above one that was already likely (the reply's usual words)."""

ALPHA = 0.5
"""The added vector's norm as a multiple of the median residual norm at the SAE's layer."""

K = 10
"""Tokens kept per latent."""


def _prompt_ids(lm: LoadedModel, question: str, start: str) -> Tensor:
    """A chat prompt whose reply has begun with `start` (plain text without a template)."""
    if lm.is_chat:
        messages = [{"role": "user", "content": question}, {"role": "assistant", "content": start}]
        return build_prompt_ids(lm, messages).to(lm.device)
    return build_prompt_ids(lm, f"{question}\n{start}", chat=False).to(lm.device)


def _add_rows_hook(delta: Tensor):
    """Forward hook on block L: row r of the (R, 1, d) output gets delta[r]."""

    def hook(_module, _args, output):
        x = block_output(output)
        x = x + delta[:, None, :].to(x.dtype)
        return (x, *output[1:]) if isinstance(output, tuple) else x

    return hook


@torch.inference_mode()
def output_scores(
    lm: LoadedModel,
    sae: TopKSAE,
    *,
    prompts: tuple[tuple[str, str], ...] = OUTPUT_PROMPTS,
    alpha: float = ALPHA,
    k: int = K,
    batch: int = 128,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """(score (n,), tokens (n, k) vocab ids, rise (n, k)): see the module docstring.

    rise[i, j] is the mean rise of tokens[i, j]'s probability; score = rise.sum(-1)."""
    layer = sae_layer(lm, sae)
    n = sae.n_latents
    ids = [_prompt_ids(lm, question, start) for question, start in prompts]
    prefixes, lasts, base, norms = [], [], [], []
    for p in ids:
        norms.append(lm.residual(p[None], layer)[0, 1:].norm(dim=-1))  # (T-1,)
        out = lm.model(input_ids=p[None, :-1], use_cache=True)
        prefixes.append(output_cache(out))
        last = lm.model(
            input_ids=p[None, -1:], **cache_kwargs(lm.model, expand_cache(output_cache(out), 1))
        )
        base.append(F.softmax(last.logits[0, -1].float(), dim=-1))  # (V,)
        lasts.append(p[-1:])
    scale = alpha * float(torch.cat(norms).median())
    base_p = torch.stack(base)  # (P, V)
    scores = torch.zeros(n)
    tokens = torch.zeros(n, k, dtype=torch.int32)
    rises = torch.zeros(n, k)
    block = lm.block(layer)
    for start in range(0, n, batch):
        latents = torch.arange(start, min(start + batch, n))
        dirs = sae.decoder_directions(latents.to(sae.device)).detach().float()  # (B, d)
        delta = scale * dirs / dirs.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        rise = torch.zeros(len(latents), base_p.shape[-1])  # (B, V) summed over prompts
        ratio = torch.zeros(len(latents), base_p.shape[-1])  # (B, V) log-ratio, summed
        handle = block.register_forward_hook(_add_rows_hook(delta.to(lm.device, lm.dtype)))
        try:
            for prefix, last, p in zip(prefixes, lasts, base_p, strict=True):
                fed = last[None].expand(len(latents), -1)  # (B, 1)
                cache = expand_cache(prefix, len(latents))
                logits = lm.model(input_ids=fed, **cache_kwargs(lm.model, cache)).logits[
                    :, -1
                ]  # (B, V)
                q = F.softmax(logits.float(), dim=-1)  # (B, V)
                rise += (q - p).cpu()
                ratio += ((q + FLOOR) / (p + FLOOR)).log().cpu()
        finally:
            handle.remove()
        rise /= len(prefixes)
        top = ratio.topk(k, dim=-1).indices  # (B, k)
        gained = rise.gather(1, top)  # (B, k)
        tokens[latents], rises[latents] = top.to(torch.int32), gained
        scores[latents] = gained.sum(-1)
        if progress is not None:
            progress(int(latents[-1]) + 1, n)
    return scores, tokens, rises


def add_output_scores(catalog, lm: LoadedModel, sae: TopKSAE, progress=None, **kwargs) -> None:
    """Measure output scores for `catalog`'s SAE and store them in it (not saved)."""
    scores, tokens, rise = output_scores(lm, sae, progress=progress, **kwargs)
    meta = {
        "prompts": list(kwargs.get("prompts", OUTPUT_PROMPTS)),
        "alpha": kwargs.get("alpha", ALPHA),
        "how": "mean rise of next-token probability over the prompts when alpha x the median "
        "residual norm along the unit direction is added at the last prompt position; "
        "score = the rise summed over its top tokens",
    }
    catalog.set_output_scores(scores, tokens, rise, lm.tokenizer, meta)
