"""The generation settings dialog."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Checkbox, Input, Label, Select, Static


class SettingsScreen(ModalScreen[dict | None]):
    """Generation settings; dismissed with the changes (validated by the engine) or None."""

    BINDINGS = [
        Binding("escape", "dismiss(None)", "Cancel", show=False),
        Binding("ctrl+s", "apply", "Apply", show=False),
    ]

    def __init__(
        self, settings, chat_available: bool, chat_mode: bool, auto_regenerate: bool
    ) -> None:
        super().__init__()
        self.settings = settings
        self.chat_available = chat_available
        self.chat_mode = chat_mode
        self.auto = auto_regenerate

    def compose(self) -> ComposeResult:
        s = self.settings
        with Vertical(id="settings-box", classes="dialog") as box:
            box.border_title = "Generation settings"
            box.border_subtitle = "enter / ctrl+s apply · esc cancel"
            with Grid(id="settings-grid"):
                yield Label("Temperature")
                yield Input(str(s.temperature), id="temperature", type="number", compact=True)
                yield Label("Top-p")
                yield Input(str(s.top_p), id="top_p", type="number", compact=True)
                yield Label("Max tokens")
                yield Input(
                    str(s.max_new_tokens), id="max_new_tokens", type="integer", compact=True
                )
                yield Label("Seed")
                yield Input(str(s.seed), id="seed", type="integer", compact=True)
                yield Label("Steer positions")
                yield Select(
                    [
                        ("all positions", "all"),
                        ("prompt only", "prompt"),
                        ("generated only", "generated"),
                    ],
                    value=s.positions,
                    allow_blank=False,
                    id="positions",
                    compact=True,
                )
                yield Label("Chat mode")
                yield Checkbox(
                    "chat template + history",
                    self.chat_mode,
                    id="chat",
                    disabled=not self.chat_available,
                    compact=True,
                )
                yield Label("Auto-regenerate")
                yield Checkbox("after a slider move", self.auto, id="auto", compact=True)
            yield Static(
                Content.styled(
                    "temperature 0 = greedy; steer positions: where the interventions apply", "dim"
                ),
                id="settings-hint",
            )
            yield Static("", id="settings-error")

    @on(Input.Submitted)
    def submitted(self) -> None:
        self.action_apply()

    def action_apply(self) -> None:
        try:
            changes = {
                "temperature": float(self.query_one("#temperature", Input).value),
                "top_p": float(self.query_one("#top_p", Input).value),
                "max_new_tokens": int(self.query_one("#max_new_tokens", Input).value),
                "seed": int(self.query_one("#seed", Input).value),
                "positions": self.query_one("#positions", Select).value,
            }
        except ValueError:
            self.show_error("every field needs a number")
            return
        if self.chat_available:
            changes["chat"] = self.query_one("#chat", Checkbox).value
        changes["auto_regenerate"] = self.query_one("#auto", Checkbox).value
        self.dismiss(changes)

    def show_error(self, message: str) -> None:
        self.query_one("#settings-error", Static).update(Content.styled(message, "$error"))
