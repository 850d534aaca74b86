"""Why this token? The playground's view of attribution (steer.attribution), no Textual.

A token of the last generation's baseline (row 0) or steered (row 1) completion is
explained in the context it was generated in: the prompt and the completion before it.
The steered row is explained with the levers it was generated with, so a lever that
caused a word shows up among the latents that caused it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from steer.attribution.report import explain
from steer.attribution.targets import Target
from steer.steering import SteeringHook


@dataclass
class WhyRow:
    latent: int
    label: str
    score: float
    """Attribution: the estimated drop of the token's logit if the latent were ablated."""
    exact: float | None
    """The drop measured by ablating it."""
    act: float
    position: int
    """Context position where it contributes most."""
    drivers: list[tuple[int, float]] = field(default_factory=list)
    """(context position, score): the tokens that drive it there."""


@dataclass
class WhyView:
    row: int
    index: int
    """Index of the explained token in its completion."""
    token: str
    tokens: list[str]
    """The context that produced it (prompt + completion before it), one string per token."""
    prompt_len: int
    metric: float
    """The token's logit."""
    features_total: float
    error_total: float
    error_share: float
    error_exact: float | None
    rows: list[WhyRow]
    seconds: float


def token_context(engine, row: int, index: int, needs: str):
    """The ids up to token `index` of completion `row` of the engine's last generation, and
    that token as a Target (read where it was predicted). `needs`: what wants an SAE, for
    the error. -> (ids (T,), Target)"""
    gen = engine.last
    if gen is None:
        raise ValueError("generate something first: then pick a token of either pane")
    if engine.sae is None:
        raise ValueError(f"no SAE loaded: {needs} needs one")
    if not 0 <= row < len(gen.token_ids):
        raise ValueError(f"there is no completion {row} (0 = baseline, 1 = steered)")
    completion = gen.token_ids[row]
    if not 0 <= index < len(completion):
        raise ValueError(f"token {index} is out of range: the completion has {len(completion)}")
    ids = torch.tensor(gen.prompt_ids + completion[: index + 1], dtype=torch.long)
    return ids, Target(read_at=len(gen.prompt_ids) + index - 1, token=int(completion[index]))


def explain_token(engine, row: int, index: int, top: int = 8) -> WhyView:
    """Explain token `index` of completion `row` of the engine's last generation."""
    ids, target = token_context(engine, row, index, "attribution")
    gen, P = engine.last, len(engine.last.prompt_ids)
    levers = None
    if row == 1 and any(iv.enabled for iv in gen.levers):
        levers = SteeringHook(
            engine.lm,
            engine.sae,
            gen.levers,
            max_acts=engine.max_acts,
            positions=gen.positions,
            prompt_len=P,
        )
    result = explain(engine.lm, engine.sae, ids, target, top=top, levers=levers)
    return WhyView(
        row=row,
        index=index,
        token=result.target_text,
        tokens=result.tokens,
        prompt_len=P,
        metric=result.metric,
        features_total=result.features_total,
        error_total=result.error_total,
        error_share=result.error_share,
        error_exact=result.error_exact,
        rows=[
            WhyRow(r.latent, engine.label(r.latent), r.score, r.exact, r.act, r.position, r.drivers)
            for r in result.rows
        ],
        seconds=result.seconds,
    )
