"""The per-token view: one feature's activation on each token of prompt and completions."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.content import Content
from textual.widgets import Static

from ..widgets import heat
from .common import FetchingDialog


class TokenViewScreen(FetchingDialog):
    """How strongly one feature fires on each token of the prompt and both completions."""

    BINDINGS = [
        Binding("escape,q", "dismiss", "Close", show=False),
        Binding("n,right", "cycle(1)", "Next feature", show=False),
        Binding("p,left", "cycle(-1)", "Previous feature", show=False),
        Binding("a", "add", "Add", show=False),
    ]

    def __init__(self, engine, latent: int) -> None:
        super().__init__()
        self.engine = engine
        self.latent = latent

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="tokens-box", classes="dialog") as self.box:
            self.box.border_subtitle = "n/p other active feature · a add · esc close"
            self.body = Static("computing…", id="tokens-body")
            yield self.body

    def load(self):
        return self.engine.token_activations(self.latent)

    def show(self, view) -> None:
        box = self.box
        box.border_title = f"Per-token activation of #{view.latent} {view.label}".rstrip()
        sections = [("Prompt", view.prompt), ("Baseline", view.baseline)]
        if view.steered is not None:
            sections.append(("Steered", view.steered))
        lines: list[Content] = [
            Content.assemble(("scale: full colour = ", "dim"), f"{view.scale:.2f}")
        ]
        for title, acts in sections:
            peak = max(acts.acts, default=0.0)
            lines.append(Content(""))
            lines.append(Content.assemble((title, "bold $accent"), (f"   max {peak:.2f}", "dim")))
            lines.append(heat(acts.tokens, acts.acts, view.scale))
        self.body.update(Content("\n").join(lines))

    def action_cycle(self, delta: int) -> None:
        latents = [f.latent for f in self.engine.features]
        if not latents:
            return
        index = latents.index(self.latent) + delta if self.latent in latents else 0
        self.latent = latents[index % len(latents)]
        self.body.update("computing…")
        self.fetch()

    def action_add(self) -> None:
        self.app.add_feature(self.latent)
