"""The playground keeps its session and a record of every run (steer.app.session).

`SessionKeeping` is a mixin of PlaygroundApp: once the model is loaded it restores the
session (levers, prompt, settings, chat turns, runs), saves it atomically whenever it
changes (checked every AUTOSAVE_INTERVAL seconds, written only when different), records
each generation as a Run, and flips the panes back through earlier runs. `HistoryScreen`
lists the runs: enter shows one, `r` brings back its levers and prompt, `e` exports the
history as JSON and Markdown.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Label
from textual.widgets.option_list import Option

from steer.app.history_export import export_history
from steer.app.session import (
    Run,
    Session,
    capture,
    record_run,
    restore,
    save_session,
    state_dir,
)

from .errors import Dialog
from .palette import SafeOptionList

AUTOSAVE_INTERVAL = 0.5  # seconds between checks for changes to save


class SessionKeeping:
    """Mixin for PlaygroundApp (before App among the bases)."""

    session_path: Path | None = None  # None: nothing is saved (tests, embedding)
    session: Session | None = None  # what to restore once loaded
    session_notes: tuple | list = ()  # set per app by keep_session
    runs: tuple | list = ()
    run_shown: int | None = None  # index of the run the panes show; None: the live view
    _saved_state: dict | None = None
    _run_start: tuple | None = None

    def keep_session(self, path: Path | None, session: Session | None, notes=()) -> None:
        self.session_path = Path(path) if path else None
        self.session = session
        self.session_notes = list(notes)
        self.runs = list(session.runs) if session else []

    # ------------------------------------------------------------ restore and save
    def start_session(self) -> None:
        """Called once the model is loaded: restore, say what was dropped, start saving."""
        session = self.session
        dropped = list(self.session_notes)
        if session is not None:
            dropped += restore(self.engine, session)
            self.auto_regenerate = session.auto_regenerate
            self.prompt_box.value = session.prompt
            self.session = None
            self.refresh_all()
            self.notify(
                f"reopened {self.session_path}: {len(self.engine.features)} features, "
                f"{len(self.runs)} runs",
                title="Session",
                timeout=6,
            )
        if dropped:
            self.notify(
                "dropped: " + "; ".join(dropped), title="Session", severity="warning", timeout=15
            )
        if self.session_path is not None:
            self.autosave()
            self.set_interval(AUTOSAVE_INTERVAL, self.autosave)

    def current_session(self) -> Session:
        prompt = self.prompt_box.value  # the app's prompt Input (any screen may be on top)
        return capture(self.engine, prompt, self.auto_regenerate, self.runs)

    def autosave(self) -> Path | None:
        """Write the session if it changed since the last write."""
        if self.session_path is None or self.engine.lm is None:
            return None
        session = self.current_session()
        state = session.state()
        if state == self._saved_state:
            return self.session_path
        save_session(self.session_path, session)
        self._saved_state = state
        return self.session_path

    def save_before_exit(self) -> str | None:
        path = self.autosave()
        return str(path) if path else None

    # ------------------------------------------------------------ runs
    def run_started(self) -> None:
        """Remember the levers and settings a generation starts with."""
        e = self.engine
        self._run_start = (
            e.active_interventions(),
            dataclasses.replace(e.settings),
            len(e.history),
        )
        self.run_shown = None

    def run_ended(self) -> None:
        gen, start = self.engine.last, self._run_start
        if gen is None or start is None:
            return
        self._run_start = None
        interventions, settings, turns_before = start
        self.runs.append(record_run(self.engine, gen, interventions, settings, turns_before))

    def show_run(self, index: int) -> None:
        """Show run `index` in the panes (the live view comes back with the next run)."""
        run = self.runs[index]
        self.run_shown = index
        self.view_prompt, self.view_history = run.prompt, []
        self.texts = [run.baseline, run.steered or ""]
        when = run.time[11:19]
        self.status_text = [
            f"run {index + 1}/{len(self.runs)} · {when}",
            f"run {index + 1} · {run.levers()}",
        ]
        self.refresh_panes()

    def action_previous_run(self) -> None:
        if not self.runs:
            self.notify("no runs yet: generate something first", severity="warning")
            return
        shown = len(self.runs) if self.run_shown is None else self.run_shown
        self.show_run(max(0, shown - 1))

    def action_next_run(self) -> None:
        if not self.runs:
            self.notify("no runs yet: generate something first", severity="warning")
            return
        shown = -1 if self.run_shown is None else self.run_shown
        self.show_run(min(len(self.runs) - 1, shown + 1))

    def bring_back(self, index: int) -> None:
        """The run's levers, settings and prompt become the current ones."""
        run = self.runs[index]
        levers = Session(sae=run.sae, features=run.interventions, settings=run.settings)
        dropped = restore_levers(self.engine, levers)
        self.prompt_box.value = run.prompt
        self.refresh_all()
        note = f"run {index + 1}: {run.levers()}"
        if dropped:
            note += " · dropped: " + "; ".join(dropped)
        self.notify(note, title="Levers brought back", timeout=6)

    def export_runs(self) -> Path | None:
        if not self.runs:
            self.notify("no runs to export yet", severity="warning")
            return None
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        folder = state_dir() / "exports" / stamp
        files = export_history(self.current_session(), folder)
        self.notify(
            f"{len(self.runs)} runs: {files[0]}\n{files[1]}\n(replay one: steer generate "
            f"--preset {folder}/runs/run-001.json)",
            title="History exported",
            timeout=12,
        )
        return folder

    def action_history(self) -> None:
        if not self.runs:
            self.notify("no runs yet: generate something first", severity="warning")
            return
        self.push_screen(HistoryScreen(self.runs), self.history_closed)

    def history_closed(self, result: tuple[str, int] | None) -> None:
        if result is None:
            return
        what, index = result
        if what == "show":
            self.show_run(index)
        elif what == "restore":
            self.bring_back(index)
        elif what == "export":
            self.export_runs()


def restore_levers(engine, levers: Session) -> list[str]:
    """restore() for a run's levers and settings, keeping the chat turns as they are."""
    turns = list(engine.history)
    dropped = restore(engine, levers)
    engine.history = turns
    return dropped


class HistoryScreen(Dialog, ModalScreen[tuple[str, int] | None]):
    """Every run of the session, newest first."""

    BINDINGS = [
        Binding("escape,q", "dismiss(None)", "Close", show=False),
        Binding("r", "choose('restore')", "Bring back levers", show=False),
        Binding("e", "export", "Export", show=False),
    ]

    def __init__(self, runs: list[Run]) -> None:
        super().__init__()
        self.runs = runs

    def compose(self) -> ComposeResult:
        with Vertical(id="history-box", classes="dialog") as box:
            box.border_title = f"Runs ({len(self.runs)})"
            box.border_subtitle = "enter show · r bring back levers · e export · esc close"
            yield Label(Content.styled("Newest first.", "dim"))
            yield SafeOptionList(
                *[
                    Option(self.describe(i, run), id=str(i))
                    for i, run in reversed(list(enumerate(self.runs)))
                ],
                id="history-list",
            )

    @staticmethod
    def describe(index: int, run: Run) -> Content:
        prompt = " ".join(run.prompt.split())
        prompt = prompt if len(prompt) <= 40 else prompt[:39] + "…"
        return Content.assemble(
            (f"{index + 1:>3} ", "bold"),
            (run.time[11:19], "dim"),
            f"  {prompt!r}  ",
            (run.levers(), "$accent"),
        )

    def on_mount(self) -> None:
        self.query_one("#history-list", SafeOptionList).focus()

    def chosen(self) -> int | None:
        option_list = self.query_one("#history-list", SafeOptionList)
        if option_list.highlighted is None:
            return None
        return int(option_list.get_option_at_index(option_list.highlighted).id)

    def on_option_list_option_selected(self, event: SafeOptionList.OptionSelected) -> None:
        self.dismiss(("show", int(event.option.id)))

    def action_choose(self, what: str) -> None:
        index = self.chosen()
        if index is not None:
            self.dismiss((what, index))

    def action_export(self) -> None:
        self.dismiss(("export", -1))
