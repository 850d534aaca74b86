"""The generation settings dialog."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Checkbox, Input, Label, Select, Static

from ..errors import Dialog


class SettingsScreen(Dialog, ModalScreen[dict | None]):
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
        self.fields: dict[str, Input] = {}  # setting name -> its input box

    def _field(self, name: str, value, kind: str) -> Input:
        self.fields[name] = Input(str(value), id=name, type=kind, compact=True)
        return self.fields[name]

    def compose(self) -> ComposeResult:
        s = self.settings
        with Vertical(id="settings-box", classes="dialog") as box:
            box.border_title = "Generation settings"
            box.border_subtitle = "enter / ctrl+s apply · esc cancel"
            with Grid(id="settings-grid"):
                yield Label("Temperature")
                yield self._field("temperature", s.temperature, "number")
                yield Label("Top-p")
                yield self._field("top_p", s.top_p, "number")
                yield Label("Max tokens")
                yield self._field("max_new_tokens", s.max_new_tokens, "integer")
                yield Label("Seed")
                yield self._field("seed", s.seed, "integer")
                yield Label("Steer positions")
                self.positions = Select(
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
                yield self.positions
                yield Label("Chat mode")
                self.chat = Checkbox(
                    "chat template + history",
                    self.chat_mode,
                    id="chat",
                    disabled=not self.chat_available,
                    compact=True,
                )
                yield self.chat
                yield Label("Auto-regenerate")
                self.auto_box = Checkbox("after a slider move", self.auto, id="auto", compact=True)
                yield self.auto_box
            yield Static(
                Content.styled(
                    "temperature 0 = greedy; steer positions: where the interventions apply", "dim"
                ),
                id="settings-hint",
            )
            self.error = Static("", id="settings-error")
            yield self.error

    @on(Input.Submitted)
    def submitted(self) -> None:
        self.action_apply()

    def action_apply(self) -> None:
        try:
            changes = {
                "temperature": float(self.fields["temperature"].value),
                "top_p": float(self.fields["top_p"].value),
                "max_new_tokens": int(self.fields["max_new_tokens"].value),
                "seed": int(self.fields["seed"].value),
                "positions": self.positions.value,
            }
        except ValueError:
            self.show_error("every field needs a number")
            return
        if self.chat_available:
            changes["chat"] = self.chat.value
        changes["auto_regenerate"] = self.auto_box.value
        self.dismiss(changes)

    def show_error(self, message: str) -> None:
        self.error.update(Content.styled(message, "$error"))
