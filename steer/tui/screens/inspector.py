"""The feature inspector: top contexts, logit lens, statistics, related features."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.content import Content
from textual.widgets import Static

from ..widgets import heat
from .common import FetchingDialog


class InspectorScreen(FetchingDialog):
    """A feature's top contexts (activating tokens highlighted), logit lens, statistics."""

    BINDINGS = [
        Binding("escape,q", "dismiss", "Close", show=False),
        Binding("a", "add", "Add to active set", show=False),
        Binding("t", "tokens", "Per-token view", show=False),
    ]

    def __init__(self, engine, latent: int) -> None:
        super().__init__()
        self.engine = engine
        self.latent = latent

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="inspector-box", classes="dialog") as self.box:
            self.box.border_title = f"Feature #{self.latent}"
            self.box.border_subtitle = "a add · t per-token · esc close"
            self.body = Static("loading…", id="inspector-body")
            yield self.body

    def load(self):
        return self.engine.inspect(self.latent)

    def show(self, info) -> None:
        self.body.update(render_feature(info, self.engine.strength_unit))
        self.box.border_title = f"Feature #{info.latent} · {info.label or 'no label'}"

    def action_add(self) -> None:
        self.app.add_feature(self.latent)

    def action_tokens(self) -> None:
        self.app.show_token_view(self.latent)


def render_feature(info, unit: str) -> Content:
    def stat(value, fmt):
        return "–" if value is None else format(value, fmt)

    lines: list[Content] = [
        Content.assemble(
            ("label      ", "dim"), (info.label or "(none: no catalog, run steer index)", "bold")
        ),
        *(
            [
                Content.assemble(
                    ("explained  ", "dim"),
                    info.explanation,
                    (f"  ({info.explanation_source} · {info.explanation_score})", "dim"),
                )
            ]
            if getattr(info, "explanation", "")
            else []
        ),
        Content.assemble(
            ("frequency  ", "dim"),
            stat(None if info.frequency is None else 100 * info.frequency, ".3f"),
            "% of tokens",
            ("   max act ", "dim"),
            stat(info.max_act, ".2f"),
            ("   mean act ", "dim"),
            stat(info.mean_act, ".2f"),
        ),
        Content(""),
        Content.styled("Logit lens (decoder direction → unembedding)", "bold $accent"),
        Content.assemble(("  promotes  ", "$success"), _tokens(info.top_tokens)),
        Content.assemble(("  suppresses ", "$error"), _tokens(info.bottom_tokens)),
        *_output_lines(info),
        Content(""),
        Content.styled("Top activating contexts", "bold $accent"),
    ]
    if not info.contexts:
        lines.append(
            Content.styled("  (no catalog: run `steer index --sae DIR` to collect contexts)", "dim")
        )
    scale = info.max_act or max((max(c.acts) for c in info.contexts if c.acts), default=1.0)
    for context in info.contexts:
        peak = context.acts[context.max_pos] if 0 <= context.max_pos < len(context.acts) else 0.0
        lines.append(
            Content.assemble(
                (f"  {peak:6.2f}  ", "dim"),
                heat(context.tokens, context.acts, scale, context.max_pos),
            )
        )
    if info.related:
        lines += [
            Content(""),
            Content.styled(
                "Feature splitting: nearest features in wider SAEs (decoder cosine)", "bold $accent"
            ),
        ]
        lines += [
            Content.assemble(("  #", "dim"), str(r.latent), " ", r.label) for r in info.related
        ]
    return Content("\n").join(lines)


def _output_lines(info) -> list:
    """Output score (steer index): what adding the feature makes the model say."""
    if info.output_score is None:
        return []
    return [
        Content.assemble(
            ("  says       ", "$success"),
            _tokens(info.output_tokens),
            (f"  (output score {info.output_score:.2f})", "dim"),
        )
    ]


def _tokens(tokens: list[str]) -> Content:
    parts: list = []
    for token in tokens:
        parts += [(repr(token)[1:-1] or "∅", "reverse"), " "]
    return Content.assemble(*parts)
