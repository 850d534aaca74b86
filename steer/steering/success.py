"""Did a lever work? Greedy replies to neutral prompts, scored by concept and coherence.

The meters `steer sweep` and benchmarks/steering_success.py share:

- a reply *names the concept* when one of the concept words appears at a word start,
  any ending (`toward.names_concept`: "dog" matches "Dogs", not "hotdog");
- a reply is *coherent* when the coherence meter passes it (coherence.py): the
  unsteered model's cross-entropy on it stays within MARGIN_NATS of its cross-entropy
  on the unsteered reply to the same prompt, and it is not a loop;
- a setting *succeeds* on a concept when at least `need` prompts whose unsteered reply
  does not name it get a steered reply that names it and is coherent.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from sae import TopKSAE
from steer.lm.models import LoadedModel

from .coherence import Coherence, continuation_ce, repetition
from .generate import GenerationSettings, generate_rows
from .intervention import Intervention
from .toward import names_concept

EVAL_PROMPTS = (
    "Tell me about your weekend.",
    "What is a good way to start the morning?",
    "Give me some advice for a new job.",
)
"""Neutral chat prompts the steering benchmark and `steer sweep` (by default) steer."""


@dataclass
class Reply:
    ids: list[int]
    text: str
    ce: float
    """The unsteered model's mean cross-entropy on the reply (nats/token)."""


def greedy_replies(
    lm: LoadedModel,
    sae: TopKSAE | None,
    prompt_ids: Tensor,
    rows: list[list[Intervention]],
    n_tokens: int,
    max_acts: Tensor | None = None,
    stop_on_eos: bool = True,
) -> list[Reply]:
    """Greedy replies of every row to one prompt (one batch), with their cross-entropy."""
    settings = GenerationSettings(max_new_tokens=n_tokens, stop_on_eos=stop_on_eos)
    ids: list[list[int]] = [[] for _ in rows]
    for events in generate_rows(lm, sae, prompt_ids, rows, settings, max_acts=max_acts):
        for e in events:
            ids[e.row].append(e.token_id)
    ce = continuation_ce(lm, prompt_ids, ids)
    return [
        Reply(i, lm.tokenizer.decode(i, skip_special_tokens=True), c)
        for i, c in zip(ids, ce, strict=True)
    ]


def coherence(reply: Reply, baseline: Reply) -> Coherence:
    return Coherence(reply.ce, baseline.ce, repetition(reply.ids))


def succeeded(
    baseline: list[str], steered: list[str], coherent: list[bool], words: list[str], need: int = 2
) -> bool:
    """At least `need` prompts whose baseline reply lacks the concept and whose steered
    reply names it and is coherent."""
    wins = sum(
        names_concept(s, words) and ok and not names_concept(b, words)
        for b, s, ok in zip(baseline, steered, coherent, strict=True)
    )
    return wins >= need
