"""`steer chat`: the keyboard-driven steering playground (a Textual app).

Only typer is imported at module level: torch and textual load when the command runs.
"""

from __future__ import annotations

from pathlib import Path

import typer

from .options import check_device, friendly_errors, resolve_device


@friendly_errors
def chat(
    model: str = typer.Option(
        None,
        "--model",
        "-m",
        help="Model: smollm2-135m (embedded, the default), a Hub id or a local directory.",
    ),
    sae: Path = typer.Option(
        None,
        "--sae",
        "-s",
        help="SAE checkpoint folder (cfg.json + sae.safetensors). Default: the SAE shipped "
        "for the embedded model under checkpoints/smollm2-135m/, if any.",
    ),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, mps or auto."),
    auto_regenerate: bool = typer.Option(
        False, "--auto/--no-auto", help="Regenerate automatically after a slider moves."
    ),
) -> None:
    """Open the playground: baseline and steered completions side by side, features on sliders.

    Keys: enter generates, ctrl+f finds features, ←/→ move a focused slider, escape cancels, F1 lists every key.
    """
    from steer.app.engine import PlaygroundEngine, find_default_sae
    from steer.lm.models import DEFAULT_MODEL

    device = check_device(resolve_device(device))  # before the app takes the terminal
    if sae is not None and not sae.exists():
        raise ValueError(f"no SAE checkpoint folder at {sae}")
    if sae is None and (model is None or model == DEFAULT_MODEL):
        sae = find_default_sae()  # None: the app opens baseline-only and says so

    from steer.tui.app import PlaygroundApp

    engine = PlaygroundEngine(device=device)
    app = PlaygroundApp(
        engine, model=model or DEFAULT_MODEL, sae_path=sae, auto_regenerate=auto_regenerate
    )
    app.run()
    if app.crash_message:  # an error the app could not contain: one line, not a traceback
        typer.echo(app.crash_message, err=True)
    if app.return_code:
        raise typer.Exit(app.return_code)
