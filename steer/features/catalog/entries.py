"""What the catalog hands out for one latent: its FeatureEntry and top ContextExamples."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ContextExample:
    tokens: list[str]
    """The token strings of the window."""
    acts: list[float]
    """The latent's activation on each token."""
    max_pos: int
    """Index in `tokens` of the context's maximum activation."""

    @property
    def max_act(self) -> float:
        return self.acts[self.max_pos]

    @property
    def text(self) -> str:
        return "".join(self.tokens)


@dataclass
class FeatureEntry:
    index: int
    label: str
    frequency: float
    """Fraction of corpus tokens on which the latent is active (in the TopK, > 0)."""
    mean_act: float
    """Mean activation over the tokens where it is active."""
    max_act: float
    top_tokens: list[str]
    """Logit lens: tokens whose logits its decoder direction raises most."""
    bottom_tokens: list[str]
    """Logit lens: tokens whose logits it lowers most."""
    contexts: list[ContextExample] = field(default_factory=list)
    """Top activating contexts, strongest first."""
    explanation: str = ""
    """The best explanation (an LM's phrase or the N2G token patterns), "" if none."""
    explanation_source: str = ""
    """`n2g` or the explainer model's name."""
    explanation_score: str = ""
    """Its score in words: `precision 0.92 · recall 0.41` or `detection 0.81`."""
    output_score: float | None = None
    """Share of the next-token probability its direction moves onto its output tokens
    (output.py); None for a catalog built before output scores."""
    output_tokens: list[str] = field(default_factory=list)
    """The tokens adding its direction makes likelier, most first (measured)."""
