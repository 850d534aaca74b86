"""The circuit behind a token: from the output back to the input tokens, through the
latents at every depth the loaded SAE has siblings at (steer.app.circuits), as a tree.

Opened from "Why this token?" with `c`. Each row: the effect through its parent (the
edge's weight), the node, its own effect. On a latent, `a` ablates it and regenerates,
`l` adds it to the feature panel as a lever; a latent of another depth switches the
playground to that depth's SAE first (the engine says so).
"""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static, Tree

from ..errors import Dialog
from .common import deliver, error_text

STYLES = {"token": "cyan", "error": "yellow", "output": "bold"}


class CircuitScreen(Dialog, ModalScreen[tuple | None]):
    """Dismissed with (layer, latent, mode) to make a lever of (mode: ablate or add), or
    None."""

    BINDINGS = [
        Binding("escape,q", "dismiss(None)", "Close", show=False),
        Binding("a", "lever('ablate')", "Ablate and regenerate", show=False),
        Binding("l", "lever('add')", "Add as a lever", show=False),
    ]

    def __init__(self, engine, row: int, index: int) -> None:
        super().__init__()
        self.engine, self.row, self.index = engine, row, index
        self.view = None

    def compose(self) -> ComposeResult:
        with Vertical(id="circuit-box", classes="dialog") as box:
            box.border_title = "Circuit: output ← latents by depth ← input tokens"
            box.border_subtitle = "↑/↓ move · a ablate + regenerate · l add as lever · esc"
            yield Static("", id="circuit-head")
            yield Tree("", id="circuit-tree")

    def on_mount(self) -> None:
        self.head("tracing the token through every depth… (a few seconds)")
        self.fetch()

    def head(self, content) -> None:
        self.query_one("#circuit-head", Static).update(content)

    @work(thread=True, exclusive=True, group="circuit", exit_on_error=False)
    def fetch(self) -> None:
        try:
            view = self.engine.circuit_token(self.row, self.index)
        except Exception as err:  # noqa: BLE001 - shown in the dialog
            deliver(self, self.head, error_text(err))
            return
        deliver(self, self.show, view)

    def show(self, view) -> None:
        from steer.app.circuits import tree_line

        self.view = view
        c = view.circuit
        depths = ", ".join(
            f"L{layer}" + (" (loaded)" if layer == view.loaded_layer else "") for layer in c.layers
        )
        lines = [f"{view.token!r}: {c.seconds:.1f} s · depths {depths}", *view.summary]
        if view.without_levers:
            lines.append("the model without levers, in the steered row's context")
        self.head(Text("\n".join(lines), style="dim"))
        tree = self.query_one("#circuit-tree", Tree)
        tree.clear()
        tree.root.set_label(Text(tree_line(c, view.root), style="bold"))
        tree.root.data = view.root.node
        self._fill(tree.root, view.root)
        tree.root.expand_all()
        tree.focus()

    def _fill(self, parent, item) -> None:
        from steer.app.circuits import tree_line

        for child in item.children:
            label = Text(tree_line(self.view.circuit, child), style=STYLES.get(child.node.kind, ""))
            if child.children:
                self._fill(parent.add(label, data=child.node), child)
            else:
                parent.add_leaf(label, data=child.node)

    def action_lever(self, mode: str) -> None:
        cursor = self.query_one("#circuit-tree", Tree).cursor_node
        node = cursor.data if cursor is not None else None
        if node is None or node.kind != "latent":
            self.notify("pick a latent (a row with #): tokens, errors and the output are no levers")
            return
        self.dismiss((node.layer, node.feature, mode))
