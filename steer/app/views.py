"""What the engine hands the UI: plain records of features, contexts, generations."""

from __future__ import annotations

from dataclasses import dataclass, field

from steer.features.catalog.store import ContextExample, FeatureEntry


@dataclass
class FeatureHit:
    """One row of a feature search: a latent, a score and its label."""

    latent: int
    score: float | None  # activation on the searched text, or None for a label search
    label: str
    explanation: str = ""
    """The best explanation with its score (`" Paris" after " in" (n2g · P.92 R.41)`)."""


@dataclass
class LeverHit(FeatureHit):
    """A feature that steers toward a concept, with the mode and strength to steer it at
    (steer.steering.toward); score: higher steers better."""

    mode: str = "add"
    strength: float = 0.0


Context = ContextExample
"""A top activating context: the catalog's own record (tokens, acts, max_pos)."""


@dataclass
class FeatureInfo(FeatureEntry):
    """Everything the inspector shows about one latent: its catalog entry (without a
    catalog: no label, statistics None, the logit lens computed, no contexts) and its
    nearest features in wider SAEs of the same family."""

    related: list[FeatureHit] = field(default_factory=list)

    @property
    def latent(self) -> int:
        return self.index


@dataclass
class TokenActs:
    tokens: list[str]
    acts: list[float]


@dataclass
class TokenView:
    """How strongly one latent fires on each token of the prompt and both completions."""

    latent: int
    label: str
    prompt: TokenActs
    baseline: TokenActs
    steered: TokenActs | None  # None when no SAE row was generated
    scale: float  # activation drawn at full intensity


@dataclass
class Turn:
    """One exchange of a chat: the user's message and both replies."""

    user: str
    baseline: str
    steered: str


@dataclass
class Generation:
    """The latest generation: what the panes show and what the per-token view reads."""

    prompt: str
    prompt_ids: list[int]
    token_ids: list[list[int]]  # per row: 0 = baseline, 1 = steered
    texts: list[str]
    done: list[bool]
    chat: bool
    cancelled: bool = False
    finished: bool = False
    levers: list = field(default_factory=list)  # the steered row's interventions, as run
    positions: str = "all"  # where they applied (GenerationSettings.positions)
