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

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

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
    prompt; 0.0 for an empty continuation."""
    prompt = torch.as_tensor(prompt_ids, dtype=torch.long).flatten().tolist()
    out = [0.0] * len(continuations)
    todo = [i for i, c in enumerate(continuations) if c]
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    for start in range(0, len(todo), batch):
        chunk = todo[start : start + batch]
        seqs = [prompt + list(continuations[i]) for i in chunk]
        T = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), T), pad, dtype=torch.long)  # (B, T) right-padded
        mask = torch.zeros(len(seqs), T, dtype=torch.long)
        for r, s in enumerate(seqs):
            ids[r, : len(s)] = torch.tensor(s)
            mask[r, : len(s)] = 1
        logits = lm.model(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device)).logits
        logp = F.log_softmax(logits[:, :-1].float(), dim=-1)  # (B, T-1, V) predicts ids[:, 1:]
        nll = -logp.gather(-1, ids[:, 1:, None].to(logp.device))[..., 0]  # (B, T-1)
        for r, i in enumerate(chunk):
            n = len(continuations[i])
            first = len(prompt) - 1  # the position whose output is the first reply token
            out[i] = float(nll[r, first : first + n].mean())
    return out


def measure(
    lm: LoadedModel, prompt_ids: Tensor, baseline: list[int], steered: list[list[int]]
) -> list[Coherence]:
    """Coherence of each steered reply against the baseline reply to the same prompt."""
    ces = continuation_ce(lm, prompt_ids, [baseline, *steered])
    return [
        Coherence(ce, ces[0], repetition(ids)) for ce, ids in zip(ces[1:], steered, strict=True)
    ]
