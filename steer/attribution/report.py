"""One answer to "why this token?": what `steer attribute` prints and the playground shows.

`explain` runs feature -> output attribution, checks the top latents by exact ablation,
removes the SAE error for the exact unexplained share, and finds for each top latent the
context tokens that drive it at the position where it mattered most (batched input ->
feature attribution). Everything is plain data, ready for JSON.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from torch import Tensor

from sae import TopKSAE
from steer.lm.models import LoadedModel
from steer.steering import SteeringHook

from .exact import ablation_effects, error_effect
from .inputs import input_attributions
from .patching import attribute
from .targets import Target, as_ids


@dataclass
class LatentRow:
    latent: int
    score: float
    """Attribution: the estimated drop of the metric when the latent is ablated."""
    exact: float | None
    """The drop measured by ablating it (None when not checked)."""
    act: float
    """Largest activation over the attributed positions."""
    position: int
    """The position where it contributes most."""
    positions: list[tuple[int, float]] = field(default_factory=list)
    """(position, attribution) wherever it is active, strongest first."""
    drivers: list[tuple[int, float]] = field(default_factory=list)
    """(token position, score): the context tokens that drive it at `position`."""


@dataclass
class Explanation:
    tokens: list[str]
    """The context, one string per token (up to the read position)."""
    target: Target
    target_text: str
    contrast_text: str | None
    metric: float
    method: str
    rows: list[LatentRow]
    features_total: float
    error_total: float
    error_share: float
    error_exact: float | None
    """m minus m with the SAE's reconstruction in place of the residual (None: not run)."""
    seconds: float
    """Time of the attribution alone (one forward and one backward for `linear`)."""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["target"] = self.target.to_dict(self.target_text, self.contrast_text)
        return d


def token_texts(tokenizer, ids: Tensor | list[int]) -> list[str]:
    return [tokenizer.decode([int(i)]) for i in as_ids(ids)]


def explain(
    lm: LoadedModel,
    sae: TopKSAE,
    ids: Tensor | list[int],
    target: Target,
    *,
    top: int = 10,
    method: str = "linear",
    steps: int = 10,
    exact: bool = True,
    drivers: int = 3,
    levers: SteeringHook | None = None,
) -> Explanation:
    """Attribute, check and explain; `top` latents by |attribution|."""
    if top < 1:
        raise ValueError(f"--top must be at least 1, got {top}")
    ids = as_ids(ids)
    start = time.perf_counter()
    attr = attribute(lm, sae, ids, target, method=method, steps=steps, levers=levers)
    seconds = time.perf_counter() - start
    best = attr.top(top)
    effects = (
        ablation_effects(lm, sae, ids, target, [s.latent for s in best], levers=levers).tolist()
        if exact and best
        else [None] * len(best)
    )
    rows = [
        LatentRow(s.latent, s.score, e, s.act, s.positions[0][0], s.positions)
        for s, e in zip(best, effects, strict=True)
    ]
    if drivers > 0 and rows:
        found = input_attributions(
            lm, sae, ids, [(r.latent, r.position) for r in rows], method=method, check=0
        )
        for row, inp in zip(rows, found, strict=True):
            row.drivers = inp.top(drivers)
    target_text, contrast_text = target.texts(lm.tokenizer)
    return Explanation(
        tokens=token_texts(lm.tokenizer, ids[: target.read_at + 1]),
        target=target,
        target_text=target_text,
        contrast_text=contrast_text,
        metric=attr.metric,
        method=method,
        rows=rows,
        features_total=attr.features_total,
        error_total=attr.error_total,
        error_share=attr.error_share,
        error_exact=error_effect(lm, sae, ids, target, levers=levers) if exact else None,
        seconds=seconds,
    )


def build_context(
    lm: LoadedModel, prompt: str, completion: str | list[int] | None = None, chat: bool = False
) -> tuple[Tensor, int]:
    """(ids (T,), start): the prompt (raw text, or wrapped in the chat template as
    `steer generate` does) followed by a completion (its text, or the exact token ids
    generate reported); start = index of the completion's first token (T without one)."""
    import torch

    from steer.steering.generate import build_prompt_ids

    if chat:
        prompt_ids = build_prompt_ids(lm, prompt, chat=True)
    else:
        if not prompt.strip():
            raise ValueError("the prompt is empty")
        prompt_ids = torch.tensor(lm.tokenizer(prompt)["input_ids"], dtype=torch.long)
    if completion is None:
        return prompt_ids, len(prompt_ids)
    if isinstance(completion, str):
        completion = lm.tokenizer(completion, add_special_tokens=False)["input_ids"]
    if not completion:
        raise ValueError("the completion is empty")
    return torch.cat([prompt_ids, torch.tensor(completion, dtype=torch.long)]), len(prompt_ids)
