"""The loading screen: shown while the model, the SAE and its catalog load."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Center
from textual.content import Content
from textual.screen import Screen
from textual.widgets import ProgressBar, Static

from ..errors import Contained


class LoadingScreen(Contained, Screen):
    """Shown while the model, the SAE and its catalog load (in a worker thread)."""

    BINDINGS = [Binding("q", "app.quit", "Quit", show=False)]

    def __init__(self, what: str) -> None:
        super().__init__(id="loading")
        self.what = what

    def compose(self) -> ComposeResult:
        with Center(id="loading-box"):
            yield Static(
                Content.assemble(("steer", "bold $accent"), " · feature-steering playground"),
                id="loading-title",
            )
            self.what_line = Static(f"Loading {self.what}", id="loading-what")
            self.bar = ProgressBar(total=100, show_eta=False, id="loading-bar")
            self.step = Static("", id="loading-step")
            yield from (self.what_line, self.bar, self.step)

    def set_progress(self, fraction: float, message: str) -> None:
        self.bar.update(progress=round(100 * max(0.0, min(1.0, fraction))))
        self.step.update(message)

    def show_error(self, message: str) -> None:
        self.bar.display = False
        self.what_line.update(Content.assemble(("could not load: ", "bold $error"), message))
        self.step.update(Content.styled("press q or ctrl+q to quit", "dim"))
