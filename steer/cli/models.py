"""`steer models`: load a model and list its hook points."""

from __future__ import annotations

import typer

from .options import friendly_errors


@friendly_errors
def models(
    model: str = typer.Option(
        "smollm2-135m",
        "--model",
        "-m",
        help="Model name: smollm2-135m (embedded), a Hub id or a local directory.",
    ),
) -> None:
    """Load a model and print its hook points (resid_post.L = output of block L, 0-based)."""
    from steer.lm.models import load_model

    lm = load_model(model)
    typer.echo(
        f"{lm.name}: {lm.model_type}, {lm.n_layers} blocks, d_model={lm.d_model}, chat={lm.is_chat}"
    )
    typer.echo(f"hook points: resid_post.0 ... resid_post.{lm.n_layers - 1}")
