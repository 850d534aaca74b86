"""The coherence meter: does steered text still read as text to the unsteered model?

The unsteered model's cross-entropy on a continuation (nats per token), given its prompt,
is low for fluent text whatever its topic, and rises sharply at the strength where a
lever pushes generation into gibberish (repeated pieces, broken words), which is the knee
Arad et al. and the AxBench authors use to bound steering strength (GUIDE.md §7).

The meter compares the steered reply's cross-entropy with the baseline reply's (same
prompt, no steering, so same length and sampling): a steered reply is *coherent* when
    ce_steered <= ce_baseline + MARGIN_NATS  and  repetition(steered) <= MAX_REPETITION
(a loop is predictable text, low cross-entropy, so repetition is checked on its own).
Measured on SmolLM2-135M (greedy): baseline replies score 0.9-1.2 nats/token; replies
steered onto a topic and still fluent ("My furry friend is a wonderful dog named
Luna...") 2.2-2.6 over 40 tokens and up to 3.5 over 16 (their first words carry the
topic switch); so the margin is 3 nats. Steering too hard mostly ends in a loop
("........", " it it it"), which the unsteered model finds *predictable* (0.8-2.8
nats/token): the repetition check catches those.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from steer.lm.kv import cache_kwargs, output_cache
from steer.lm.models import LoadedModel

MARGIN_NATS = 3.0
"""How far above the baseline's cross-entropy a steered reply may go and stay coherent."""

MAX_REPETITION = 0.5
"""Most of a reply's token trigrams may not be repeats: a loop ("........", "the the the")
is predictable, so its cross-entropy is low, and only this catches it."""


def repetition(token_ids: list[int]) -> float:
    """Share of the reply's token trigrams that repeat an earlier one (0 = none)."""
    grams = [tuple(token_ids[i : i + 3]) for i in range(len(token_ids) - 2)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


@dataclass
class Coherence:
    steered: float
    """The unsteered model's mean cross-entropy on the steered reply (nats/token)."""
    baseline: float
    """The same on the unsteered reply to the same prompt."""
    repeats: float = 0.0
    """`repetition` of the steered reply."""
    margin: float = MARGIN_NATS

    @property
    def excess(self) -> float:
        return self.steered - self.baseline

    @property
    def ok(self) -> bool:
        return self.excess <= self.margin and self.repeats <= MAX_REPETITION

    def describe(self) -> str:
        verdict = "coherent" if self.ok else "incoherent"
        loop = f", {self.repeats:.0%} repeated" if self.repeats > MAX_REPETITION else ""
        return (
            f"{verdict}: {self.steered:.2f} nats/token vs {self.baseline:.2f} unsteered "
            f"(bound +{self.margin:g}){loop}"
        )


@torch.inference_mode()
def continuation_ce(
    lm: LoadedModel, prompt_ids: Tensor, continuations: list[list[int]], batch: int = 32
) -> list[float]:
    """The unsteered model's mean cross-entropy (nats/token) on each continuation of one
    prompt; 0.0 for an empty continuation. The prompt (all but its last token) runs once;
    its cached keys and values are shared by every continuation."""
    prompt = torch.as_tensor(prompt_ids, dtype=torch.long).flatten().tolist()
    out = [0.0] * len(continuations)
    todo = [i for i, c in enumerate(continuations) if c]
    if not todo:
        return out
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    head = torch.tensor(prompt[:-1], dtype=torch.long, device=lm.device)[None]  # (1, P-1)
    prefix = output_cache(lm.model(input_ids=head, use_cache=True)) if len(prompt) > 1 else None
    for start in range(0, len(todo), batch):
        chunk = todo[start : start + batch]
        # Row r reads the prompt's last token, then its continuation but the last token:
        # position j predicts continuation token j. Right padding needs no mask: causal
        # attention keeps each real position from seeing the pads after it.
        L = max(len(continuations[i]) for i in chunk)
        fed = torch.full((len(chunk), L), pad, dtype=torch.long)  # (B, L)
        target = torch.full((len(chunk), L), -100, dtype=torch.long)  # (B, L) -100: padding
        for r, i in enumerate(chunk):
            c = list(continuations[i])
            fed[r, : len(c)] = torch.tensor([prompt[-1], *c[:-1]])
            target[r, : len(c)] = torch.tensor(c)
        cache = None if prefix is None else expand_cache(prefix, len(chunk))
        logits = lm.model(
            input_ids=fed.to(lm.device), **cache_kwargs(lm.model, cache)
        ).logits  # (B, L, V)
        nll = F.cross_entropy(
            logits.float().flatten(0, 1), target.flatten().to(logits.device), reduction="none"
        ).view(len(chunk), L)  # (B, L), 0 at padding
        for r, i in enumerate(chunk):
            out[i] = float(nll[r, : len(continuations[i])].mean())
    return out


def expand_cache(cache, rows: int):
    """A copy of a one-row KV cache for `rows` rows (a forward extends the copy, not it)."""
    cache = copy.deepcopy(cache)
    cache.reorder_cache(torch.zeros(rows, dtype=torch.long, device=_cache_device(cache)))
    return cache


def _cache_device(cache) -> torch.device:
    layers = getattr(cache, "layers", None)
    return layers[0].keys.device if layers else cache.key_cache[0].device


def measure(
    lm: LoadedModel, prompt_ids: Tensor, baseline: list[int], steered: list[list[int]]
) -> list[Coherence]:
    """Coherence of each steered reply against the baseline reply to the same prompt."""
    ces = continuation_ce(lm, prompt_ids, [baseline, *steered])
    return [
        Coherence(ce, ces[0], repetition(ids)) for ce, ids in zip(ces[1:], steered, strict=True)
    ]
