"""Why this token? Pick a token of either completion and see the latents that caused it.

Both completions are shown with a cursor (← / → moves it, tab switches pane, a click picks
a token); enter explains the token under it: the latents with the largest attribution
(bars; the exact effect of ablating each beside it; labels), the share the SAE's error
carries, and for the selected latent (↑ / ↓) the context tokens that drive it. `a` makes
the selected latent an ablation lever and regenerates: see why, pull the lever, see the
word change. `c` opens the circuit of the token: the same question through every depth
(screens/circuit.py); a lever picked there comes back through this screen.
"""

from __future__ import annotations

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Static

from ..errors import Dialog
from ..widgets import visible_token
from .common import deliver, error_text

PANES = ("Baseline", "Steered")
BAR = 14  # characters of the longest bar


class WhyScreen(Dialog, ModalScreen[int | tuple | None]):
    """Dismissed with a latent to ablate (and regenerate), a circuit node to make a lever
    of ((layer, latent, mode), from the circuit screen), or None."""

    BINDINGS = [
        Binding("escape,q", "dismiss(None)", "Close", show=False),
        # Priority: the scrolling box would take the arrows for itself.
        Binding("left", "move(-1)", "Previous token", show=False, priority=True),
        Binding("right", "move(1)", "Next token", show=False, priority=True),
        Binding("tab", "pane", "Other pane", show=False, priority=True),
        Binding("enter,w", "explain", "Why?", show=False, priority=True),
        Binding("up", "select(-1)", "Previous latent", show=False, priority=True),
        Binding("down", "select(1)", "Next latent", show=False, priority=True),
        Binding("a", "ablate", "Ablate and regenerate", show=False),
        Binding("i", "inspect", "Inspect", show=False),
        Binding("c", "circuit", "Circuit", show=False),
    ]

    def __init__(self, engine) -> None:
        super().__init__()
        self.engine = engine
        gen = engine.last
        self.panes = [list(ids) for ids in gen.token_ids] if gen is not None else []
        self.row = max((r for r, ids in enumerate(self.panes) if ids), default=0)
        self.index = max(len(self.panes[self.row]) - 1, 0) if self.panes else 0
        self.view = None
        self.selected = 0

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="why-box", classes="dialog") as box:
            box.border_title = "Why this token?"
            box.border_subtitle = "←/→ token · tab pane · enter why · ↑/↓ latent · a ablate + regenerate · c circuit · esc"
            yield Static("", id="why-tokens")
            yield Static("", id="why-body")

    def on_mount(self) -> None:
        self.render_tokens()
        if any(self.panes):
            self.action_explain()
        else:
            self.body("nothing generated yet: type a prompt and press enter first")

    # ------------------------------------------------------------ the cursor
    def render_tokens(self) -> None:
        lines = []
        for r, ids in enumerate(self.panes):
            parts = [(f"{PANES[r] if r < len(PANES) else r}  ", "bold $accent")]
            for i, token_id in enumerate(ids):
                text = visible_token(self.engine.token_text(token_id))
                style = f"@click=screen.pick({r},{i})"
                if (r, i) == (self.row, self.index):
                    style += " reverse bold"
                parts.append((text, style))
            lines.append(Content.assemble(*parts))
        self.query_one("#why-tokens", Static).update(Content("\n").join(lines))

    def action_move(self, delta: int) -> None:
        n = len(self.panes[self.row]) if self.panes else 0
        if n:
            self.index = max(0, min(n - 1, self.index + delta))
            self.render_tokens()

    def action_pane(self) -> None:
        others = [r for r, ids in enumerate(self.panes) if ids and r != self.row]
        if others:
            self.row = others[0]
            self.index = min(self.index, len(self.panes[self.row]) - 1)
            self.render_tokens()

    def action_pick(self, row: int, index: int) -> None:
        self.row, self.index = row, index
        self.render_tokens()
        self.action_explain()

    # ------------------------------------------------------------ the explanation
    def body(self, content) -> None:
        self.query_one("#why-body", Static).update(content)

    def action_explain(self) -> None:
        if not self.panes or not self.panes[self.row]:
            return
        self.body(Content.styled("attributing… (one forward, one backward, then the check)", "dim"))
        self.fetch(self.row, self.index)

    @work(thread=True, exclusive=True, group="why", exit_on_error=False)
    def fetch(self, row: int, index: int) -> None:
        try:
            view = self.engine.explain_token(row, index)
        except Exception as err:  # noqa: BLE001 - shown in the dialog
            deliver(self, self.body, error_text(err))
            return
        deliver(self, self.show, view)

    def show(self, view) -> None:
        self.view, self.selected = view, 0
        self.render_view()

    def render_view(self) -> None:
        v = self.view
        peak = max([abs(r.score) for r in v.rows] or [1.0]) or 1.0
        exact = "" if v.error_exact is None else f" (removing it: {v.error_exact:+.2f})"
        lines = [
            Content.assemble(
                ("why ", "dim"),
                (repr(v.token), "bold"),
                (f"?  {PANES[v.row].lower()} token {v.index}, logit {v.metric:.2f}", "dim"),
                (f"  · {v.seconds:.2f} s", "dim"),
            ),
            Content.assemble(
                ("unexplained: ", "bold"),
                f"{v.error_share:.0%} of the attributed effect goes through the SAE error"
                f" ({v.error_total:+.2f} vs features {v.features_total:+.2f}){exact}",
            ),
            Content.styled("  feature  attribution        exact  label", "dim"),
        ]
        for j, r in enumerate(v.rows):
            n = max(1, round(abs(r.score) / peak * BAR))
            bar = ("█" * n).ljust(BAR)
            mark = "▶ " if j == self.selected else "  "
            ex = "" if r.exact is None else f"{r.exact:+7.2f}"
            lines.append(
                Content.assemble(
                    (mark, "bold $accent"),
                    f"#{r.latent:<6} ",
                    (bar, "$success" if r.score > 0 else "$error"),
                    f" {r.score:+6.2f} {ex}  ",
                    (r.label, "bold" if j == self.selected else ""),
                )
            )
        if v.rows:
            lines += ["", self.drivers(v.rows[self.selected], v)]
        self.body(Content("\n").join(lines))

    def drivers(self, r, v) -> Content:
        """The context with the tokens that drive the selected latent highlighted."""
        strong = {t: s for t, s in r.drivers}
        top = max([abs(s) for s in strong.values()] or [1.0]) or 1.0
        start = max(0, min([*strong, r.position]) - 8)  # the neighbourhood, not a chat log
        parts = [(f"#{r.latent} at {v.tokens[r.position]!r}, driven by: ", "bold")]
        if start > 0:
            parts.append(("…", "dim"))
        for t in range(start, len(v.tokens)):
            text = visible_token(v.tokens[t])
            if t in strong:
                level = min(9, int(abs(strong[t]) / top * 9))
                parts.append((text, f"on #{40 + 21 * level:02x}{30 + 10 * level:02x}14 bold"))
            elif t == r.position:
                parts.append((text, "underline"))
            else:
                parts.append((text, "dim" if t < v.prompt_len else ""))
        return Content.assemble(*parts)

    def action_select(self, delta: int) -> None:
        if self.view is not None and self.view.rows:
            self.selected = (self.selected + delta) % len(self.view.rows)
            self.render_view()

    def selected_latent(self) -> int | None:
        if self.view is None or not self.view.rows:
            return None
        return self.view.rows[self.selected].latent

    def action_ablate(self) -> None:
        latent = self.selected_latent()
        if latent is not None:
            self.dismiss(latent)

    def action_inspect(self) -> None:
        latent = self.selected_latent()
        if latent is not None:
            self.app.inspect_feature(latent)

    def action_circuit(self) -> None:
        """The circuit of the token under the cursor, through every depth."""
        if not self.panes or not self.panes[self.row]:
            return
        from .circuit import CircuitScreen

        self.app.push_screen(CircuitScreen(self.engine, self.row, self.index), self.circuit_closed)

    def circuit_closed(self, node: tuple | None) -> None:
        if node is not None:
            self.dismiss(node)
