"""The key help dialog (F1)."""

from __future__ import annotations

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Static

from ..errors import Dialog
from ..keys import HELP, MODES_HELP


class HelpScreen(Dialog, ModalScreen[None]):
    BINDINGS = [
        Binding("escape,q,f1,question_mark", "dismiss", "Close", show=False),
    ]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box", classes="dialog") as box:
            box.border_title = "Keys"
            box.border_subtitle = "escape closes"
            for section, keys in HELP:
                yield Static(Content.styled(section, "bold $accent"), classes="help-section")
                table = Table(box=None, show_header=False, padding=(0, 1, 0, 0), expand=True)
                table.add_column(style="bold", no_wrap=True, width=20)
                table.add_column(ratio=1)
                for key, what in keys:
                    table.add_row(key, what)
                yield Static(table, classes="help-keys")
            yield Static(MODES_HELP, classes="help-note")
