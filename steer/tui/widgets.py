"""Widgets of the playground: a float Slider, the feature panel, the completion panes.

Textual has no slider (the third-party one is GPL and integer only), so `Slider` is a
small focusable widget with a float value: ←/→ fine steps, shift+←/→ coarse steps,
`0` resets, and typing a number then Enter sets an exact value.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import Input, Static

from .errors import Contained

TYPABLE = set("0123456789.")


class Slider(Contained, Widget, can_focus=True):
    """A focusable slider over a float value, drawn as a bar centred on zero."""

    DEFAULT_CSS = """
    Slider { height: 1; width: 1fr; min-width: 12; }
    """
    BINDINGS = [
        Binding("right", "nudge(1)", "Increase", show=False),
        Binding("left", "nudge(-1)", "Decrease", show=False),
        Binding("shift+right", "nudge(1, True)", "Increase (coarse)", show=False),
        Binding("shift+left", "nudge(-1, True)", "Decrease (coarse)", show=False),
    ]

    value: reactive[float] = reactive(0.0, init=False)

    class TypedText(Message):
        """A printable key that is not a strength (a letter, space, punctuation): text
        meant for the prompt. The panel takes no unmodified letters, so a prompt typed
        while a slider has focus cannot mute, remove or change a feature."""

        def __init__(self, slider: Slider, text: str) -> None:
            super().__init__()
            self.slider = slider
            self.text = text

    class Changed(Message):
        """The slider's value changed (by key, typed number or reset)."""

        def __init__(self, slider: Slider, value: float) -> None:
            super().__init__()
            self.slider = slider
            self.value = value

        @property
        def control(self) -> Slider:
            return self.slider

    def __init__(
        self,
        value: float = 0.0,
        *,
        step: float = 1.0,
        coarse: float = 10.0,
        minimum: float = -100.0,
        maximum: float = 100.0,
        default: float = 0.0,
        span: float | None = None,
        inactive: bool = False,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.step, self.coarse = step, coarse
        self.minimum, self.maximum, self.default = minimum, maximum, default
        self.span = span or max(abs(minimum), abs(maximum))  # value drawn as a full bar
        self.inactive = inactive  # drawn dim (a muted feature, an ablation)
        self.typed: str | None = None  # digits typed so far, None when not typing
        self.set_reactive(Slider.value, self.validate_value(value))

    def validate_value(self, value: float) -> float:
        return round(max(self.minimum, min(self.maximum, float(value))), 4)

    def watch_value(self, value: float) -> None:
        self.post_message(self.Changed(self, value))

    def action_nudge(self, direction: int, coarse: bool = False) -> None:
        self.commit_typed()
        self.value = self.value + direction * (self.coarse if coarse else self.step)

    def reset(self) -> None:
        self.typed = None
        self.value = self.default
        self.refresh()

    def commit_typed(self) -> bool:
        """Set the value from the typed digits; False (and nothing changes) if invalid."""
        typed, self.typed = self.typed, None
        self.refresh()
        if not typed:
            return False
        try:
            self.value = float(typed)
        except ValueError:
            self.notify(f"not a number: {typed!r}", severity="warning")
            return False
        return True

    def on_key(self, event) -> None:
        char = event.character
        if self.typed is not None:
            if event.key == "enter":
                self.commit_typed()
            elif event.key == "escape":
                self.typed = None
            elif event.key == "backspace":
                self.typed = self.typed[:-1] or None
            elif char is not None and (char in TYPABLE or (char == "-" and self.typed == "")):
                self.typed += char
            else:
                return
        elif char == "0":
            self.reset()
        elif char is not None and (char in TYPABLE or char == "-"):
            self.typed = char
        elif event.is_printable and char:
            self.post_message(self.TypedText(self, char))
        else:
            return
        event.stop()
        event.prevent_default()
        self.refresh()

    def on_blur(self) -> None:
        if self.typed is not None:
            self.commit_typed()

    def render(self) -> Content:
        width = max(self.size.width, 12)
        if self.typed is not None:
            return Content.assemble(
                ("= ", "bold"),
                (self.typed, "bold $accent"),
                ("▏", "$accent"),
                ("  ⏎ set · esc", "dim"),
            )
        number = f"{self.value:+.1f}"
        bar_width = max(5, width - len(number) - 1)
        half = bar_width // 2
        frac = max(-1.0, min(1.0, self.value / self.span)) if self.span else 0.0
        filled = round(abs(frac) * half)
        over = abs(self.value) > self.span
        color = "dim" if self.inactive else ("$success" if self.value >= 0 else "$error")
        cells: list[tuple[str, str]] = []
        for i in range(bar_width):
            offset = i - half
            inside = (0 < offset <= filled) if frac >= 0 else (-filled <= offset < 0)
            if offset == 0:  # zero: the knob sits here when the value rounds to 0
                cells.append(("●", f"bold {color}") if filled == 0 else ("│", "dim"))
            elif inside and abs(offset) == filled:
                knob = ("▶" if frac > 0 else "◀") if over else "●"
                cells.append((knob, f"bold {color}"))
            elif inside:
                cells.append(("━", color))
            else:
                cells.append(("─", "dim"))
        number_style = "dim" if self.inactive else "bold"
        return Content.assemble(*cells, " ", (number, number_style))


class FeatureRow(Contained, Vertical):
    """One active feature: a header (on/off, index, label) and a mode + strength slider."""

    # No unmodified letters or space: text typed here goes to the prompt (Slider.TypedText).
    BINDINGS = [
        Binding("ctrl+d", "request('toggle')", "Mute / unmute", show=False),
        Binding("ctrl+e", "request('mode')", "Cycle mode", show=False),
        Binding("enter", "request('inspect')", "Inspect", show=False),
        Binding("delete", "request('remove')", "Remove", show=False),
        Binding("up", "move(-1)", "Previous feature", show=False),
        Binding("down", "move(1)", "Next feature", show=False),
    ]

    class Request(Message):
        """The user asked for something on this feature (toggle, mode, inspect, ...)."""

        def __init__(self, row: FeatureRow, what: str) -> None:
            super().__init__()
            self.row = row
            self.latent = row.latent
            self.what = what

    def __init__(
        self,
        latent: int,
        strength: float,
        mode: str,
        enabled: bool,
        label: str,
        steps: tuple[float, float, float],
        span: float,
    ) -> None:
        super().__init__(classes="feature-row")
        self.latent = latent
        self.leaving = False  # removed, waiting to be detached
        self.label = label
        self.mode = mode
        self.enabled = enabled
        fine, coarse, limit = steps
        self.slider = Slider(
            strength,
            step=fine,
            coarse=coarse,
            minimum=-limit,
            maximum=limit,
            span=span,
            inactive=not enabled or mode == "ablate",
        )

    def compose(self) -> ComposeResult:
        yield Static(self.header(), classes="feature-header")
        with Horizontal(classes="feature-controls"):
            yield Static(self.mode_text(), classes="feature-mode")
            yield self.slider

    def header(self) -> Content:
        mark = ("●", "$success") if self.enabled else ("○", "dim")
        label = self.label or "(no label)"
        return Content.assemble(
            mark,
            " ",
            (f"#{self.latent}" if isinstance(self.latent, int) else f"v:{self.latent}", "bold"),
            " ",
            (label, "" if self.enabled and self.label else "dim"),
        )

    def mode_text(self) -> Content:
        return Content.styled(f"{self.mode:<6}", "$accent" if self.enabled else "dim")

    def update_from(self, strength: float, mode: str, enabled: bool) -> None:
        self.mode, self.enabled = mode, enabled
        self.slider.inactive = not enabled or mode == "ablate"
        if self.slider.value != strength:
            self.slider.value = strength
        self.set_class(not enabled, "muted")
        if self.is_mounted:
            self.query_one(".feature-header", Static).update(self.header())
            self.query_one(".feature-mode", Static).update(self.mode_text())
        self.slider.refresh()

    def on_mount(self) -> None:
        self.set_class(not self.enabled, "muted")

    def action_request(self, what: str) -> None:
        self.post_message(self.Request(self, what))

    def action_move(self, delta: int) -> None:
        rows = self.parent.rows() if isinstance(self.parent, FeaturePanel) else [self]
        index = rows.index(self) + delta
        if 0 <= index < len(rows):
            rows[index].slider.focus()
            rows[index].scroll_visible()


class FeaturePanel(Contained, VerticalScroll):
    """The active feature set, one FeatureRow per feature."""

    def rows(self) -> list[FeatureRow]:
        return [row for row in self.query(FeatureRow) if not row.leaving]

    def sync(self, features, label_of, steps, span, empty_text: str) -> None:
        """Make the rows match the features: update in place, remove, append."""
        wanted = [f.latent for f in features]
        rows = self.rows()
        for row in rows:
            if row.latent not in wanted:
                row.leaving = True
                row.remove()
        rows = [row for row in rows if not row.leaving]
        if [row.latent for row in rows] != wanted[: len(rows)]:  # reordered: start over
            for row in rows:
                row.leaving = True
                row.remove()
            rows = []
        for empty in self.query(".empty"):
            if features:
                empty.remove()
        if not features:
            if not self.query(".empty"):
                self.mount(Static(empty_text, classes="empty"))
            else:
                self.query_one(".empty", Static).update(empty_text)
            return
        by_latent = {f.latent: f for f in features}
        for row in rows:
            f = by_latent[row.latent]
            row.update_from(f.strength, f.mode, f.enabled)
        new = [
            FeatureRow(f.latent, f.strength, f.mode, f.enabled, label_of(f.latent), steps, span)
            for f in features[len(rows) :]
        ]
        if new:
            self.mount_all(new)

    def row(self, latent: int) -> FeatureRow | None:
        return next((r for r in self.rows() if r.latent == latent), None)


class CompletionPane(Contained, VerticalScroll, can_focus=True):
    """A scrolling pane of text: the prompt (dim) and the completion as it streams in."""

    def compose(self) -> ComposeResult:
        yield Static("", classes="pane-body")

    def show(self, content: Content, follow: bool = True) -> None:
        self.query_one(".pane-body", Static).update(content)
        if follow:
            self.call_after_refresh(self.scroll_end, animate=False)

    @property
    def text(self) -> str:
        """Plain text currently shown (for tests)."""
        return str(self.query_one(".pane-body", Static).render())


# ---------------------------------------------------------------- rendering helpers
def visible_token(token: str) -> str:
    """Show whitespace-only and newline tokens so highlighting them is visible."""
    return (
        token.replace("\n", "⏎").replace("\t", "→")
        if token.strip() or not token
        else token.replace("\n", "⏎")
    )


def heat(tokens: list[str], acts: list[float], scale: float, mark: int | None = None) -> Content:
    """Tokens with a background whose intensity follows the activation (0 .. scale)."""
    parts: list[tuple[str, str] | str] = []
    for i, (token, act) in enumerate(zip(tokens, acts, strict=False)):
        level = max(0.0, min(1.0, act / scale)) if scale > 0 else 0.0
        text = visible_token(token)
        if level <= 0.02:
            parts.append(text)
            continue
        # Orange ramp over the dark background: 10 fixed steps keep snapshots stable.
        step = min(9, int(level * 10))
        red, green, blue = 40 + 21 * step, 30 + 10 * step, 20
        style = f"on #{red:02x}{green:02x}{blue:02x}"
        if mark is not None and i == mark:
            style += " bold underline"
        parts.append((text, style))
    return Content.assemble(*parts)


class PromptInput(Input):
    """The prompt box. Text typed on the feature panel is sent here (`take_text`); the
    focus that follows must not select it all, as Input does on focus, or the next letter
    would replace the ones before. Select-on-focus comes back when the box loses focus."""

    def on_mount(self) -> None:
        if self.app.is_headless:  # tests: a blinking cursor makes screenshots timing-dependent
            self.cursor_blink = False

    def take_text(self, text: str) -> None:
        self.select_on_focus = False
        self.focus()
        self.insert_text_at_cursor(text)

    def _on_blur(self, _event) -> None:
        # Textual calls each class's own _on_blur: Input's runs as well.
        self.select_on_focus = True
