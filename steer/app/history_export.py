"""The run history exported for reading and replaying: history.json (every run),
history.md and runs/run-NNN.json (one steering preset per run, for
`steer generate --preset`). The runs come from the session (steer.app.session).
"""

from __future__ import annotations

import json
from pathlib import Path

from sae import atomic_write

from .session import SESSION_VERSION, Session, now


def export_history(session: Session, folder: str | Path) -> list[Path]:
    """history.json (every run), history.md (for reading) and runs/run-NNN.json (one
    preset per run, for `steer generate --preset`) in `folder`; returns the files."""
    folder = Path(folder).expanduser()
    (folder / "runs").mkdir(parents=True, exist_ok=True)
    written = []
    for i, run in enumerate(session.runs, 1):
        path = folder / "runs" / f"run-{i:03d}.json"
        text = json.dumps(run.to_preset(f"run {i}"), ensure_ascii=False, indent=2) + "\n"
        atomic_write(path, lambda tmp, text=text: Path(tmp).write_text(text, encoding="utf-8"))
        written.append(path)
    data = {
        "version": SESSION_VERSION,
        "exported": now(),
        "model": session.model,
        "sae": session.sae,
        "runs": [run.to_dict() for run in session.runs],
    }
    json_path = folder / "history.json"
    atomic_write(
        json_path,
        lambda tmp: Path(tmp).write_text(
            json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
        ),
    )
    md_path = folder / "history.md"
    md = history_markdown(session)
    atomic_write(md_path, lambda tmp: Path(tmp).write_text(md, encoding="utf-8"))
    return [json_path, md_path, *written]


def history_markdown(session: Session) -> str:
    lines = ["# steer: run history", ""]
    if not session.runs:
        lines.append("No runs yet.")
    for i, run in enumerate(session.runs, 1):
        s = run.settings
        sampling = (
            "greedy"
            if not s.get("temperature")
            else (f"T={s.get('temperature'):g} top-p={s.get('top_p', 1):g} seed={run.seed}")
        )
        lines += [
            f"## Run {i} · {run.time}",
            "",
            f"- model: `{run.model}` · SAE: `{run.sae or 'none'}`",
            f"- levers ({run.strength_units}): {run.levers()}",
            f"- {sampling} · {s.get('max_new_tokens')} tokens · positions {s.get('positions')}"
            f" · {'chat' if run.chat else 'completion'}"
            + (" · cancelled" if run.cancelled else ""),
        ]
        if run.replayable:
            lines.append(f"- replay: `steer generate --preset runs/run-{i:03d}.json`")
        elif run.turns_before:
            lines.append(f"- not replayable alone: turn {run.turns_before + 1} of a chat")
        lines += [
            "",
            "**Prompt**",
            "",
            _quote(run.prompt),
            "",
            "**Baseline**",
            "",
            _quote(run.baseline),
        ]
        if run.steered is not None:
            lines += ["", "**Steered**", "", _quote(run.steered)]
        lines.append("")
    return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    return "\n".join("> " + line for line in (text.strip() or "(empty)").splitlines())
