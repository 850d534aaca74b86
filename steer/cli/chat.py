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
        None, "--auto/--no-auto", help="Regenerate automatically after a slider moves."
    ),
    session: Path = typer.Option(
        None,
        "--session",
        help="Open this session file and keep saving to it. Default: the last session, "
        "session.json in the state folder ($STEER_STATE_DIR, else ~/.local/state/steer).",
    ),
    new: bool = typer.Option(
        False,
        "--new",
        help="Start a fresh session (the last one is kept under sessions/ beside it).",
    ),
) -> None:
    """Open the playground: baseline and steered completions side by side, features on sliders.

    The session (model, SAE, features, prompt, settings and every run) is saved as it
    changes, and the next `steer chat` reopens it.

    Keys: enter generates, ctrl+f finds features, ←/→ move a focused slider, escape cancels, F1 lists every key.
    """
    from steer.app.engine import PlaygroundEngine
    from steer.app.session import archive_session, default_session_path, load_session

    device = check_device(resolve_device(device))  # before the app takes the terminal
    path = session if session is not None else default_session_path()
    saved, notes = None, []
    if new:
        kept = archive_session(path)
        if kept is not None:
            typer.echo(f"the previous session is kept as {kept}", err=True)
    else:
        saved, notes = load_session(path)
    model, sae, more = _model_and_sae(model, sae, saved)
    notes += more
    if auto_regenerate is None:
        auto_regenerate = bool(saved and saved.auto_regenerate)

    from steer.tui.app import PlaygroundApp

    engine = PlaygroundEngine(device=device)
    app = PlaygroundApp(
        engine,
        model=model,
        sae_path=sae,
        auto_regenerate=auto_regenerate,
        session_path=path,
        session=saved,
        session_notes=notes,
    )
    app.run()
    app.autosave()  # what changed in the last moments
    if app.crash_message:  # an error the app could not contain: one line, not a traceback
        typer.echo(app.crash_message, err=True)
    if app.return_code:
        raise typer.Exit(app.return_code)


def _model_and_sae(model: str | None, sae: Path | None, saved) -> tuple[str, Path | None, list]:
    """The model and SAE to open: the flags, else the session's, else the defaults."""
    from steer.app.engine import find_default_sae
    from steer.lm.models import DEFAULT_MODEL

    notes = []
    if sae is not None and not sae.exists():
        raise ValueError(f"no SAE checkpoint folder at {sae}")
    if saved is not None and model is None and sae is None:
        model = saved.model
        if saved.sae and Path(saved.sae).is_dir():
            sae = Path(saved.sae)
        elif saved.sae:
            notes.append(f"the session's SAE {saved.sae} is gone")
    model = model or DEFAULT_MODEL
    if sae is None and model == DEFAULT_MODEL:
        sae = find_default_sae()  # None: the app opens baseline-only and says so
    return model, sae, notes
