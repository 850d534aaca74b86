"""A request's steering expression -> the levers the model thread applies, and back.

The expression language is steer.steering.expr's (`2.5 #2374 + 0.4 #55:add @generated`);
"" is the baseline (no levers). Saved vectors (`v:NAME`) are read from beside the SAE.
"""

from __future__ import annotations

from pathlib import Path

from steer.steering import Intervention
from steer.steering.expr import format_steering, parse_steering, resolve_recipe


class SteeringError(ValueError):
    """The request's steering is at fault (syntax, a feature out of range, no such vector)."""


def read_steering(text: str, sae, sae_dir: str | Path | None) -> tuple[list[Intervention], str]:
    """(levers checked against the SAE, the expression as the printer writes it)."""
    if not isinstance(text, str):
        raise SteeringError(f"steer must be a steering expression (a string), got {text!r}")
    try:
        recipe = parse_steering(text)
        if recipe and sae is None:
            raise ValueError("this server has no SAE: it can only run the baseline")
        levers = resolve_recipe(recipe, sae, sae_dir) if recipe else []
    except SteeringError:
        raise
    except ValueError as err:
        raise SteeringError(str(err).strip().splitlines()[0]) from None
    return levers, format_steering(recipe)
