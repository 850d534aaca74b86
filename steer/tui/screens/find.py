"""Find features: by the text they fire on, by label, or by #id; or, in "steer toward…"
mode (ctrl+t), the set of features that, pulled together, make the model talk about the
text (ctrl+r adds them all, each with its recommended mode and strength)."""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option
from textual.worker import get_current_worker

from steer.app.query import feature_number

from ..errors import Dialog
from ..palette import SafeOptionList
from .common import deliver, first_line
from .inspector import InspectorScreen


class FindScreen(Dialog, ModalScreen[None]):
    """Type text: the features firing on it, and the features whose labels match it."""

    BINDINGS = [
        Binding("escape", "dismiss", "Close", show=False),
        Binding("down", "results", "Results", show=False),
        Binding("a", "add(False)", "Add", show=False),
        Binding("i", "inspect", "Inspect", show=False),
        Binding("ctrl+t", "toggle_toward", "Steer toward…", show=False),
        Binding("ctrl+r", "add_and_regenerate", "Add and regenerate", show=False),
    ]

    def __init__(self, engine, query: str = "", toward: bool = False) -> None:
        super().__init__()
        self.engine = engine
        self.initial = query
        self.toward = toward
        self.hits: dict[str, int] = {}
        self.levers: dict[int, tuple[str, float]] = {}  # latent -> (mode, strength)

    def compose(self) -> ComposeResult:
        with Vertical(id="find-box", classes="dialog"):
            yield Input(self.initial, id="find-input")
            self.results = SafeOptionList(id="find-results")
            self.status = Static("", id="find-status")
            yield self.results
            yield self.status

    def on_mount(self) -> None:
        self.results.display = False
        self.show_mode()
        if self.initial:
            self.run_search(self.initial)

    def show_mode(self) -> None:
        box = self.query_one("#find-box")
        box.border_title = "Steer toward…" if self.toward else "Find features"
        box.border_subtitle = (
            "↓ results · enter add one · ctrl+r add the set+rerun · i inspect · "
            if self.toward
            else "↓ results · enter add · a keep adding · ctrl+r add+rerun · i inspect · "
        ) + ("ctrl+t find by firing" if self.toward else "ctrl+t steer toward…")
        self.query_one("#find-input", Input).placeholder = (
            "a word or phrase the model should talk about (takes a few seconds)"
            if self.toward
            else "text the feature should fire on, a label word, or #123"
        )

    def action_toggle_toward(self) -> None:
        self.toward = not self.toward
        self.show_mode()
        query = self.query_one("#find-input", Input).value
        if query.strip():
            self.run_search(query)

    @on(Input.Submitted, "#find-input")
    def submitted(self, event: Input.Submitted) -> None:
        self.run_search(event.value)

    def run_search(self, query: str) -> None:
        if not query.strip():
            self.status.update("type some text first")
            return
        self.status.update(
            "measuring which features steer toward it…" if self.toward else "searching…"
        )
        if self.toward:
            self.toward_worker(query)
        else:
            self.search_worker(query)

    @work(thread=True, exclusive=True, group="find", exit_on_error=False)
    def toward_worker(self, query: str) -> None:
        worker = get_current_worker()
        levers, errors = [], []
        try:
            levers = self.engine.toward(query)
        except Exception as err:  # noqa: BLE001 - shown to the user
            errors.append(first_line(err))
        if not worker.is_cancelled:
            deliver(self, self.show_results, [], [], errors, levers)

    @work(thread=True, exclusive=True, group="find", exit_on_error=False)
    def search_worker(self, query: str) -> None:
        worker = get_current_worker()
        by_text, by_label, errors = [], [], []
        jump = feature_number(query) is not None
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

    def show_results(self, by_text, by_label, errors, levers=()) -> None:
        results = self.results
        results.clear_options()
        self.hits, self.levers = {}, {}
        options: list[Option | None] = []
        if levers:
            unit = self.engine.strength_unit
            options.append(
                Option(
                    Content.assemble(
                        ("Steer toward this text together", "bold $accent"),
                        (f"  (score · mode strength {unit})".replace("  )", ")"), "dim"),
                    ),
                    disabled=True,
                )
            )
            for hit in levers:
                self.levers[hit.latent] = (hit.mode, hit.strength)
                options.append(
                    self._option("s", hit, f"{hit.score:5.2f} {hit.mode} {hit.strength:<6.3g}")
                )
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
            options.append(
                Option(
                    Content.styled(
                        "Labels and explanations matching (by relevance)", "bold $accent"
                    ),
                    disabled=True,
                )
            )
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
        self.status.update(status)
        if self.hits:
            first = next(i for i, o in enumerate(options) if o is not None and not o.disabled)
            results.highlighted = first

    def _option(self, kind: str, hit, score: str) -> Option:
        option_id = f"{kind}{hit.latent}"
        self.hits[option_id] = hit.latent
        label = hit.label or "(no label)"
        explained = getattr(hit, "explanation", "")
        prompt = Content.assemble(
            (f"{score} ", "dim") if score else "",
            (f"#{hit.latent:<6}", "bold"),
            " ",
            (label, "" if hit.label else "dim"),
            (f"\n        {explained}", "dim") if explained else "",
        )
        return Option(prompt, id=option_id)

    def _selected(self) -> int | None:
        results = self.results
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
        mode, strength = self.levers.get(latent, (None, None))
        self.app.add_feature(latent, strength, mode)
        if close:
            self.dismiss()

    def action_add_and_regenerate(self) -> None:
        """One key from the results to the steered reply: in "steer toward…" mode add the
        whole set (its features steer together, each at its recommended mode and
        strength), otherwise the highlighted result; close, run the last prompt again
        (the meter then says whether the reply is still text)."""
        if self.toward and self.levers:
            for latent, (mode, strength) in self.levers.items():
                self.app.add_feature(latent, strength, mode)
            self.dismiss()
        elif self._selected() is None:
            self.status.update("pick a result first (↓)")
            return
        else:
            self.action_add(True)
        self.app.action_regenerate()

    def action_inspect(self) -> None:
        latent = self._selected()
        if latent is not None:
            self.app.push_screen(InspectorScreen(self.engine, latent))

    def action_results(self) -> None:
        results = self.results
        if results.display:
            results.focus()

    def check_action(self, action: str, parameters) -> bool | None:
        # `a` and `i` are letters: while the search box has focus they are typed, not actions.
        if action in ("add", "inspect") and isinstance(self.focused, Input):
            return False
        return True
