"""Explanations of SAE latents: N2G-style token patterns scored by precision and recall
(n2g.py, fitted on one SAE pass over held-out text: heldout.py)."""

from .heldout import HeldoutCodes, fit_and_score, sae_codes
from .n2g import (
    ANY,
    FIRE_FRACTION,
    SHAPES,
    START,
    Examples,
    Patterns,
    Scores,
    firing_events,
    fit_patterns,
    score_patterns,
)

__all__ = [
    "ANY",
    "FIRE_FRACTION",
    "SHAPES",
    "START",
    "Examples",
    "HeldoutCodes",
    "Patterns",
    "Scores",
    "fit_and_score",
    "firing_events",
    "fit_patterns",
    "sae_codes",
    "score_patterns",
]
