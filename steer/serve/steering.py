"""The one place the server reads and writes steering expressions.

A request's `steer` field and `steer serve --steer` are steering expressions; "" is the
baseline (no levers).
"""

from __future__ import annotations

from steer.steering import Intervention, parse_feature


def parse_levers(text: str) -> list[Intervention]:
    """The levers of a steering expression ("" -> [])."""
    if not isinstance(text, str):
        raise ValueError(f"steer must be a string, got {text!r}")
    return [parse_feature(spec) for spec in text.replace(",", " ").split()]


def format_levers(levers: list[Intervention]) -> str:
    """The expression of a list of levers (what the server reports it applied)."""
    return ", ".join(
        f"{iv.latent}:ablate" if iv.mode == "ablate" else f"{iv.latent}={iv.strength:g}:{iv.mode}"
        for iv in levers
        if iv.enabled
    )
