"""`steer history`: the runs recorded by `steer chat` (each generation's prompt, levers,
settings, seed and texts), listed or exported as JSON and Markdown."""

from __future__ import annotations

from pathlib import Path

import typer

from .options import friendly_errors

history_app = typer.Typer(
    name="history",
    help="The runs recorded in a playground session: list them, export them.",
    no_args_is_help=True,
    add_completion=False,
)

SESSION_HELP = (
    "Session file. Default: the last session of `steer chat` (session.json in the state folder)."
)


def _open(session: Path | None):
    from steer.app.session import default_session_path, load_session

    path = session if session is not None else default_session_path()
    if not Path(path).expanduser().is_file():
        raise ValueError(f"no session at {path}: run `steer chat` first, or give --session FILE")
    saved, dropped = load_session(path)
    for note in dropped:
        typer.echo(f"note: dropped {note}", err=True)
    return path, saved


@history_app.command("export")
@friendly_errors
def export(
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write into (created)."),
    session: Path = typer.Option(None, "--session", help=SESSION_HELP),
) -> None:
    """Write history.json, history.md and runs/run-NNN.json (one preset per run:
    `steer generate --preset runs/run-001.json` replays it)."""
    from steer.app.history_export import export_history

    path, saved = _open(session)
    if not saved.runs:
        raise ValueError(f"the session {path} has no runs yet")
    files = export_history(saved, out)
    typer.echo(f"{len(saved.runs)} runs from {path}")
    for file in files[:2]:
        typer.echo(f"  {file}")
    typer.echo(f"  {out / 'runs'}/run-001.json ... (replay: steer generate --preset FILE)")


@history_app.command("list")
@friendly_errors
def list_runs(session: Path = typer.Option(None, "--session", help=SESSION_HELP)) -> None:
    """One line per run: number, time, prompt, levers."""
    path, saved = _open(session)
    typer.echo(f"{len(saved.runs)} runs in {path}")
    for i, run in enumerate(saved.runs, 1):
        prompt = " ".join(run.prompt.split())
        prompt = prompt if len(prompt) <= 40 else prompt[:39] + "…"
        typer.echo(f"{i:>4}  {run.time}  {prompt!r}  {run.levers()}")
