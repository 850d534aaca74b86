"""Save or load a preset of the active feature set."""

from __future__ import annotations

from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList
from textual.widgets.option_list import Option

from ..errors import Dialog
from ..palette import SafeOptionList


class PresetsScreen(Dialog, ModalScreen[tuple[str, str] | None]):
    """Save the active feature set under a name, or load a saved one.

    Dismissed with ("save", name_or_path), ("load", path) or None.
    """

    BINDINGS = [Binding("escape", "dismiss(None)", "Close", show=False)]

    def __init__(self, presets: list[Path], folder: Path, save: bool = False) -> None:
        super().__init__()
        self.presets = presets
        self.folder = folder
        self.save_first = save

    def compose(self) -> ComposeResult:
        with Vertical(id="presets-box", classes="dialog") as box:
            box.border_title = "Presets"
            box.border_subtitle = f"in {self.folder} · esc close"
            yield Label("Save the active features as (a name or a path.json), enter saves:")
            self.name_box = Input(placeholder="e.g. golden-gate", id="preset-name")
            yield self.name_box
            yield Label(
                "Saved presets (enter loads):"
                if self.presets
                else "No saved presets in this folder yet."
            )
            yield Label(
                Content.styled("To load a file from elsewhere, type load:PATH above.", "dim")
            )
            self.preset_list = SafeOptionList(
                *[Option(p.stem, id=str(p)) for p in self.presets], id="preset-list"
            )
            yield self.preset_list

    def on_mount(self) -> None:
        if self.presets and not self.save_first:
            self.preset_list.focus()
        else:
            self.name_box.focus()

    @on(Input.Submitted, "#preset-name")
    def save(self, event: Input.Submitted) -> None:
        value = event.value.strip()
        if not value:
            return
        if value.startswith("load:"):
            self.dismiss(("load", value[5:].strip()))
        else:
            self.dismiss(("save", value))

    @on(OptionList.OptionSelected, "#preset-list")
    def load(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(("load", event.option.id or ""))
