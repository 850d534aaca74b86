"""The feature web as a tree: broad features at the top, their splits one level wider below."""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static, Tree

from ..errors import Dialog
from .inspector import InspectorScreen


class WebScreen(Dialog, ModalScreen[None]):
    """Walk the web (steer.app.web.WebView): expand a node to see its children; enter or `a`
    makes it a lever, `i` inspects it; type a label word or #id to jump into the tree."""

    BINDINGS = [
        Binding("escape", "dismiss", "Close", show=False),
        Binding("a", "add", "Add", show=False),
        Binding("i", "inspect", "Inspect", show=False),
        Binding("slash", "search", "Search", show=False),
    ]

    def __init__(self, engine, view) -> None:
        super().__init__()
        self.engine = engine
        self.view = view
        self.hits: list = []
        self.hit_index = 0

    def compose(self) -> ComposeResult:
        with Vertical(id="web-box", classes="dialog") as box:
            box.border_title = "Feature web: broad → fine"
            box.border_subtitle = "enter/a add · i inspect · / search · esc close"
            yield Input(placeholder="label word or #id, enter jumps (again: next)", id="web-find")
            yield Tree("features", id="web-tree")
            yield Static("", id="web-status")

    def on_mount(self) -> None:
        tree = self.query_one("#web-tree", Tree)
        tree.show_root = False
        self._fill(tree.root, self.view.roots())
        tree.root.expand()
        tree.focus()
        levels = " → ".join(lv.name for lv in self.view.web.levels)
        self.query_one("#web-status", Static).update(
            f"{levels} · {self.view.web.tokens:,} tokens · "
            + ("the loaded SAE is not in this web" if self.view.loaded is None else "")
        )

    def _fill(self, parent, views) -> None:
        for v in views:
            label = Text(v.text, style="" if v.lever is not None else "dim")
            if v.has_children:
                parent.add(label, data=v.node, allow_expand=True)
            else:
                parent.add_leaf(label, data=v.node)

    @on(Tree.NodeExpanded, "#web-tree")
    def expanded(self, event: Tree.NodeExpanded) -> None:
        node = event.node
        if node.data is not None and not node.children:
            self._fill(node, self.view.children(node.data))

    @on(Tree.NodeSelected, "#web-tree")
    def selected(self, event: Tree.NodeSelected) -> None:
        if event.node.data is not None and not event.node.allow_expand:
            self.action_add()

    def _current(self):
        cursor = self.query_one("#web-tree", Tree).cursor_node
        return cursor.data if cursor is not None else None

    def _lever(self) -> int | None:
        node = self._current()
        if node is None:
            return None
        latent = self.view.lever(node)
        if latent is None:
            name = self.view.web.levels[node[0]].name
            self.notify(f"#{node[1]} is a feature of {name}: open that SAE (ctrl+p) to use it")
        return latent

    def action_add(self) -> None:
        latent = self._lever()
        if latent is not None:
            self.app.add_feature(latent)

    def action_inspect(self) -> None:
        latent = self._lever()
        if latent is not None:
            self.app.push_screen(InspectorScreen(self.engine, latent))

    def action_search(self) -> None:
        self.query_one("#web-find", Input).focus()

    @on(Input.Submitted, "#web-find")
    def search(self, event: Input.Submitted) -> None:
        query = event.value.strip()
        if getattr(self, "_last_query", None) == query and self.hits:
            self.hit_index = (self.hit_index + 1) % len(self.hits)
        else:
            self.hits, self.hit_index = self.view.find(query), 0
        self._last_query = query
        status = self.query_one("#web-status", Static)
        if not self.hits:
            status.update(f"nothing in the web matches {query!r}")
            return
        status.update(f"match {self.hit_index + 1} of {len(self.hits)}")
        self.jump(self.hits[self.hit_index])

    def jump(self, target) -> None:
        """Open the branch down to `target` and put the cursor on it."""
        tree = self.query_one("#web-tree", Tree)
        parent = tree.root
        for node in self.view.path_to(target):
            child = next((c for c in parent.children if c.data == node), None)
            if child is None:
                return
            if node != target:
                if not child.children:
                    self._fill(child, self.view.children(node))
                child.expand()
            parent = child
        tree.focus()
        # an expanded branch gets its lines at the next refresh: move the cursor after it
        self.call_after_refresh(tree.move_cursor, parent)

    def check_action(self, action: str, parameters) -> bool | None:
        if action in ("add", "inspect", "search") and isinstance(self.focused, Input):
            return False
        return True
