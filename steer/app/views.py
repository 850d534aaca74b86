"""What the engine hands the UI: plain records of features, contexts, generations."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class FeatureHit:
    """One row of a feature search: a latent, a score and its label."""

    latent: int
    score: float | None  # activation on the searched text, or None for a label search
    label: str


@dataclass
class Context:
    """A top activating context: tokens, their activations, the position of the max."""

    tokens: list[str]
    acts: list[float]
    max_pos: int


@dataclass
class FeatureInfo:
    """Everything the inspector shows about one latent."""

    latent: int
    label: str
    frequency: float | None  # fraction of corpus tokens it fires on (None without catalog)
    mean_act: float | None
    max_act: float | None
    top_tokens: list[str]  # logit lens: tokens W_dec[i] promotes
    bottom_tokens: list[str]  # ... and suppresses
    contexts: list[Context]
    related: list[FeatureHit] = field(default_factory=list)


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
