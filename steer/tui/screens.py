"""Screens of the playground: loading, help, find, inspector, per-token view, settings, presets.

Screens that need the model (find, inspect, per-token view) fetch their data in a thread
worker, so the UI stays live while a generation holds the model.
"""

from __future__ import annotations

from pathlib import Path

from rich.table import Table
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Center, Grid, Vertical, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen, Screen
from textual.widgets import (
    Checkbox,
    Input,
    Label,
    OptionList,
    ProgressBar,
    Select,
    Static,
)
from textual.widgets.option_list import Option
from textual.worker import get_current_worker

from .keys import HELP, MODES_HELP
from .widgets import heat


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def deliver(screen: Screen, callback, *args) -> None:
    """From a worker thread: run callback(*args) on the UI thread if the screen is still open."""

    def run() -> None:
        if screen.is_attached:
            callback(*args)

    try:
        screen.app.call_from_thread(run)
    except RuntimeError:  # the app is shutting down
        pass


def error_text(err: BaseException) -> Content:
    return Content.assemble(("error: ", "bold $error"), first_line(err))


# ---------------------------------------------------------------- loading
class LoadingScreen(Screen):
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
            yield Static(f"Loading {self.what}", id="loading-what")
            yield ProgressBar(total=100, show_eta=False, id="loading-bar")
            yield Static("", id="loading-step")

    def set_progress(self, fraction: float, message: str) -> None:
        self.query_one(ProgressBar).update(progress=round(100 * max(0.0, min(1.0, fraction))))
        self.query_one("#loading-step", Static).update(message)

    def show_error(self, message: str) -> None:
        self.query_one(ProgressBar).display = False
        self.query_one("#loading-what", Static).update(
            Content.assemble(("could not load: ", "bold $error"), message)
        )
        self.query_one("#loading-step", Static).update(
            Content.styled("press q or ctrl+q to quit", "dim")
        )


# ---------------------------------------------------------------- help
class HelpScreen(ModalScreen[None]):
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


# ---------------------------------------------------------------- find features
class FindScreen(ModalScreen[None]):
    """Type text: the features firing on it, and the features whose labels match it."""

    BINDINGS = [
        Binding("escape", "dismiss", "Close", show=False),
        Binding("down", "results", "Results", show=False),
        Binding("a", "add(False)", "Add", show=False),
        Binding("i", "inspect", "Inspect", show=False),
    ]

    def __init__(self, engine, query: str = "") -> None:
        super().__init__()
        self.engine = engine
        self.initial = query
        self.hits: dict[str, int] = {}

    def compose(self) -> ComposeResult:
        with Vertical(id="find-box", classes="dialog") as box:
            box.border_title = "Find features"
            box.border_subtitle = "↓ results · enter add · a keep adding · i inspect · esc"
            yield Input(
                self.initial,
                placeholder="text the feature should fire on, a label word, or #123",
                id="find-input",
            )
            yield OptionList(id="find-results")
            yield Static("", id="find-status")

    def on_mount(self) -> None:
        self.query_one("#find-results", OptionList).display = False
        if self.initial:
            self.run_search(self.initial)

    @on(Input.Submitted, "#find-input")
    def submitted(self, event: Input.Submitted) -> None:
        self.run_search(event.value)

    def run_search(self, query: str) -> None:
        if not query.strip():
            self.query_one("#find-status", Static).update("type some text first")
            return
        self.query_one("#find-status", Static).update("searching…")
        self.search_worker(query)

    @work(thread=True, exclusive=True, group="find", exit_on_error=False)
    def search_worker(self, query: str) -> None:
        worker = get_current_worker()
        by_text, by_label, errors = [], [], []
        jump = query.strip().lstrip("#").isdigit()
        try:
            if jump:
                by_label = self.engine.search(query)
            else:
                by_text = self.engine.find_by_text(query)
        except Exception as err:  # noqa: BLE001 - shown to the user
            errors.append(first_line(err))
        if not jump and self.engine.catalog is not None:
            try:
                by_label = self.engine.search(query)
            except Exception as err:  # noqa: BLE001
                errors.append(first_line(err))
        if not worker.is_cancelled:
            deliver(self, self.show_results, by_text, by_label, errors)

    def show_results(self, by_text, by_label, errors) -> None:
        results = self.query_one("#find-results", OptionList)
        results.clear_options()
        self.hits = {}
        options: list[Option | None] = []
        if by_text:
            unit = "activation ÷ max" if self.engine.max_acts is not None else "activation"
            options.append(
                Option(
                    Content.assemble(
                        ("Fires on this text", "bold $accent"), (f"  ({unit})", "dim")
                    ),
                    disabled=True,
                )
            )
            for hit in by_text:
                options.append(self._option("t", hit, f"{hit.score:7.2f}"))
        if by_label:
            if options:
                options.append(None)
            options.append(Option(Content.styled("Labels matching", "bold $accent"), disabled=True))
            for hit in by_label:
                options.append(self._option("l", hit, ""))
        results.add_options(options)
        results.display = bool(self.hits)
        status = (
            " · ".join(errors)
            if errors
            else f"{len(self.hits)} results"
            if self.hits
            else "nothing found"
        )
        self.query_one("#find-status", Static).update(status)
        if self.hits:
            first = next(i for i, o in enumerate(options) if o is not None and not o.disabled)
            results.highlighted = first

    def _option(self, kind: str, hit, score: str) -> Option:
        option_id = f"{kind}{hit.latent}"
        self.hits[option_id] = hit.latent
        label = hit.label or "(no label)"
        prompt = Content.assemble(
            (f"{score} ", "dim") if score else "",
            (f"#{hit.latent:<6}", "bold"),
            " ",
            (label, "" if hit.label else "dim"),
        )
        return Option(prompt, id=option_id)

    def _selected(self) -> int | None:
        results = self.query_one("#find-results", OptionList)
        if results.highlighted is None or not results.display:
            return None
        option = results.get_option_at_index(results.highlighted)
        return self.hits.get(option.id or "")

    @on(OptionList.OptionSelected, "#find-results")
    def chosen(self, event: OptionList.OptionSelected) -> None:
        self.action_add(True)

    def action_add(self, close: bool = False) -> None:
        latent = self._selected()
        if latent is None:
            return
        self.app.add_feature(latent)
        if close:
            self.dismiss()

    def action_inspect(self) -> None:
        latent = self._selected()
        if latent is not None:
            self.app.push_screen(InspectorScreen(self.engine, latent))

    def action_results(self) -> None:
        results = self.query_one("#find-results", OptionList)
        if results.display:
            results.focus()

    def check_action(self, action: str, parameters) -> bool | None:
        # `a` and `i` are letters: while the search box has focus they are typed, not actions.
        if action in ("add", "inspect") and isinstance(self.focused, Input):
            return False
        return True


# ---------------------------------------------------------------- inspector
class InspectorScreen(ModalScreen[None]):
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
        with VerticalScroll(id="inspector-box", classes="dialog") as box:
            box.border_title = f"Feature #{self.latent}"
            box.border_subtitle = "a add · t per-token · esc close"
            yield Static("loading…", id="inspector-body")

    def on_mount(self) -> None:
        self.fetch()

    @work(thread=True, exclusive=True, group="inspect", exit_on_error=False)
    def fetch(self) -> None:
        try:
            info = self.engine.inspect(self.latent)
        except Exception as err:  # noqa: BLE001 - shown in the dialog
            deliver(self, self.show_error, err)
            return
        deliver(self, self.show, info)

    def show_error(self, err: BaseException) -> None:
        self.query_one("#inspector-body", Static).update(error_text(err))

    def show(self, info) -> None:
        body = self.query_one("#inspector-body", Static)
        body.update(render_feature(info, self.engine.strength_unit))
        self.query_one(
            "#inspector-box"
        ).border_title = f"Feature #{info.latent} · {info.label or 'no label'}"

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


def _tokens(tokens: list[str]) -> Content:
    parts: list = []
    for token in tokens:
        parts += [(repr(token)[1:-1] or "∅", "reverse"), " "]
    return Content.assemble(*parts)


# ---------------------------------------------------------------- per-token view
class TokenViewScreen(ModalScreen[None]):
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
        with VerticalScroll(id="tokens-box", classes="dialog") as box:
            box.border_subtitle = "n/p other active feature · a add · esc close"
            yield Static("computing…", id="tokens-body")

    def on_mount(self) -> None:
        self.fetch()

    @work(thread=True, exclusive=True, group="tokens", exit_on_error=False)
    def fetch(self) -> None:
        try:
            view = self.engine.token_activations(self.latent)
        except Exception as err:  # noqa: BLE001 - shown in the dialog
            deliver(self, self.show_error, err)
            return
        deliver(self, self.show, view)

    def show_error(self, err: BaseException) -> None:
        self.query_one("#tokens-body", Static).update(error_text(err))

    def show(self, view) -> None:
        box = self.query_one("#tokens-box")
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
        self.query_one("#tokens-body", Static).update(Content("\n").join(lines))

    def action_cycle(self, delta: int) -> None:
        latents = [f.latent for f in self.engine.features]
        if not latents:
            return
        index = latents.index(self.latent) + delta if self.latent in latents else 0
        self.latent = latents[index % len(latents)]
        self.query_one("#tokens-body", Static).update("computing…")
        self.fetch()

    def action_add(self) -> None:
        self.app.add_feature(self.latent)


# ---------------------------------------------------------------- settings
class SettingsScreen(ModalScreen[dict | None]):
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

    def compose(self) -> ComposeResult:
        s = self.settings
        with Vertical(id="settings-box", classes="dialog") as box:
            box.border_title = "Generation settings"
            box.border_subtitle = "enter / ctrl+s apply · esc cancel"
            with Grid(id="settings-grid"):
                yield Label("Temperature")
                yield Input(str(s.temperature), id="temperature", type="number", compact=True)
                yield Label("Top-p")
                yield Input(str(s.top_p), id="top_p", type="number", compact=True)
                yield Label("Max tokens")
                yield Input(
                    str(s.max_new_tokens), id="max_new_tokens", type="integer", compact=True
                )
                yield Label("Seed")
                yield Input(str(s.seed), id="seed", type="integer", compact=True)
                yield Label("Steer positions")
                yield Select(
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
                yield Label("Chat mode")
                yield Checkbox(
                    "chat template + history",
                    self.chat_mode,
                    id="chat",
                    disabled=not self.chat_available,
                    compact=True,
                )
                yield Label("Auto-regenerate")
                yield Checkbox("after a slider move", self.auto, id="auto", compact=True)
            yield Static(
                Content.styled(
                    "temperature 0 = greedy; steer positions: where the interventions apply", "dim"
                ),
                id="settings-hint",
            )
            yield Static("", id="settings-error")

    @on(Input.Submitted)
    def submitted(self) -> None:
        self.action_apply()

    def action_apply(self) -> None:
        try:
            changes = {
                "temperature": float(self.query_one("#temperature", Input).value),
                "top_p": float(self.query_one("#top_p", Input).value),
                "max_new_tokens": int(self.query_one("#max_new_tokens", Input).value),
                "seed": int(self.query_one("#seed", Input).value),
                "positions": self.query_one("#positions", Select).value,
            }
        except ValueError:
            self.show_error("every field needs a number")
            return
        if self.chat_available:
            changes["chat"] = self.query_one("#chat", Checkbox).value
        changes["auto_regenerate"] = self.query_one("#auto", Checkbox).value
        self.dismiss(changes)

    def show_error(self, message: str) -> None:
        self.query_one("#settings-error", Static).update(Content.styled(message, "$error"))


# ---------------------------------------------------------------- presets
class PresetsScreen(ModalScreen[tuple[str, str] | None]):
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
            yield Input(placeholder="e.g. golden-gate", id="preset-name")
            yield Label(
                "Saved presets (enter loads):"
                if self.presets
                else "No saved presets in this folder yet."
            )
            yield Label(
                Content.styled("To load a file from elsewhere, type load:PATH above.", "dim")
            )
            yield OptionList(*[Option(p.stem, id=str(p)) for p in self.presets], id="preset-list")

    def on_mount(self) -> None:
        if self.presets and not self.save_first:
            self.query_one("#preset-list", OptionList).focus()
        else:
            self.query_one("#preset-name", Input).focus()

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
