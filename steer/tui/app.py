"""The playground app (`steer chat`): a thin Textual view over PlaygroundEngine.

Layout (120×40; 80×24 works the same, narrower):

    status line: model · SAE · mode · sampling
    ┌ Features ──────┐┌ Baseline ─────────┐┌ Steered ──────────┐
    │ ● #12 bridges  ││ prompt…           ││ prompt…           │
    │ clamp ──●── 10 ││ completion        ││ steered completion│
    └────────────────┘└───────────────────┘└───────────────────┘
    [ prompt input ]
    where typing goes (the prompt, or a focused feature's strength)
    footer: main keys (F1 lists all)

Generation runs in a thread worker (group "generate", exclusive: a new one cancels the
old): it checks `is_cancelled` between tokens and posts each step's tokens as a message,
so the UI never waits on the model.
"""

from __future__ import annotations

import contextlib
from functools import partial
from pathlib import Path

from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal
from textual.content import Content
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import Footer, Input, Static
from textual.worker import get_current_worker

from .errors import ErrorContainment
from .meter import CoherenceMeter
from .palette import CheckpointCommands, FeatureCommands, PresetCommands, SafePalette
from .record import SessionKeeping
from .screens import (
    FindScreen,
    HelpScreen,
    InspectorScreen,
    LoadingScreen,
    PresetsScreen,
    SettingsScreen,
    TokenViewScreen,
    WebScreen,
    WhyScreen,
    first_line,
)
from .widgets import CompletionPane, FeaturePanel, FeatureRow, PromptInput, Slider

AUTO_REGENERATE_DELAY = 0.6  # seconds of slider stillness before an automatic regenerate


class TokensArrived(Message):
    def __init__(self, gen_id: int, events: list) -> None:
        super().__init__()
        self.gen_id = gen_id
        self.events = events


class GenerationEnded(Message):
    def __init__(self, gen_id: int, cancelled: bool, error: str | None) -> None:
        super().__init__()
        self.gen_id = gen_id
        self.cancelled = cancelled
        self.error = error


class LoadProgress(Message):
    def __init__(self, fraction: float, text: str) -> None:
        super().__init__()
        self.fraction = fraction
        self.text = text


class LoadFinished(Message):
    def __init__(self, error: str | None, fatal: bool) -> None:
        super().__init__()
        self.error = error
        self.fatal = fatal


TYPING_HINT = Content.styled(
    "typing → the prompt · on a feature: digits set its strength, ←/→ nudge, "
    "ctrl+d mute, ctrl+e mode, del remove, ctrl+z undo",
    "dim",
)


class PlaygroundApp(ErrorContainment, SessionKeeping, CoherenceMeter, App):
    """Baseline and steered completions side by side, features on sliders."""

    CSS_PATH = "steer.tcss"
    TITLE = "steer"
    COMMANDS = App.COMMANDS | {FeatureCommands, PresetCommands, CheckpointCommands}
    BINDINGS = [
        Binding("f1,question_mark", "help", "Help", id="help", key_display="F1"),
        Binding("ctrl+f", "find", "Find", id="find"),
        Binding("ctrl+g", "settings", "Settings", id="settings"),
        Binding("ctrl+o", "presets", "Presets", id="presets"),
        Binding("escape", "cancel", "Cancel", id="cancel"),
        Binding("ctrl+r,f5", "regenerate", "Regenerate", id="regenerate", show=False),
        Binding("ctrl+s", "presets(True)", "Save preset", id="save-preset", show=False),
        Binding("ctrl+t", "tokens", "Per-token view", id="tokens", show=False),
        Binding("ctrl+y", "why", "Why this token?", id="why", show=False),
        Binding("ctrl+b", "web", "Feature web", id="web", show=False),
        Binding("ctrl+l", "new_chat", "New chat", id="new-chat", show=False),
        Binding("ctrl+n", "toggle_chat", "Chat / completion", id="toggle-chat", show=False),
        Binding("f6", "history", "Runs", id="history", show=False),
        Binding("f7", "previous_run", "Previous run", id="previous-run", show=False),
        Binding("f8", "next_run", "Next run", id="next-run", show=False),
        Binding("ctrl+z", "undo_remove", "Undo remove", id="undo", show=False),
    ]

    generating: reactive[bool] = reactive(False)

    def __init__(
        self,
        engine=None,
        model: str | None = None,
        sae_path: str | Path | None = None,
        auto_regenerate: bool = False,
        session_path: str | Path | None = None,
        session=None,
        session_notes=(),
    ) -> None:
        super().__init__()
        self.keep_session(session_path, session, session_notes)  # steer.tui.record
        if engine is None:
            from steer.app.engine import PlaygroundEngine

            engine = PlaygroundEngine()
        self.engine = engine
        self.model_arg = model
        self.sae_arg = sae_path
        self.auto_regenerate = auto_regenerate
        self.gen_id = 0
        self.last_prompt: str | None = None
        self.view_prompt: str | None = None  # prompt shown in the panes
        self.view_history: list = []  # chat turns shown above it
        self.texts: list[str] = ["", ""]
        self.status_text: list[str] = ["", ""]
        self._auto_timer = None

    # ------------------------------------------------------------ layout
    def compose(self) -> ComposeResult:
        self.status_line = Static("", id="status")
        self.feature_panel = FeaturePanel(id="features")
        self.panes = (CompletionPane(id="baseline"), CompletionPane(id="steered"))
        self.prompt_box = PromptInput(placeholder="Type a prompt, enter generates", id="prompt")
        # The levers as one steering expression (README: Steering expressions), editable.
        self.expression_line = Input(
            placeholder="steering expression, e.g. 2.5 #2374 + 0.4 #55:add @generated",
            id="steer-expr",
            compact=True,
        )
        yield self.status_line
        with Horizontal(id="main"):
            yield self.feature_panel
            yield from self.panes
        yield self.expression_line
        yield self.prompt_box
        # Where typing goes, always true (the feature panel takes no unmodified letters),
        # so it never depends on which widget has focus.
        yield Static(TYPING_HINT, id="typing")
        yield Footer()

    def on_mount(self) -> None:
        self.panes[0].border_title = "Baseline"
        self.panes[1].border_title = "Steered"
        if self.engine.lm is None:
            from steer.app.engine import DEFAULT_MODEL

            what = self.model_arg or DEFAULT_MODEL
            if self.sae_arg:
                what += f" + SAE {Path(self.sae_arg).name}"
            self.push_screen(LoadingScreen(what))
            self.load_worker()
        else:
            self.loaded()

    @work(thread=True, exclusive=True, group="load", exit_on_error=False)
    def load_worker(self) -> None:
        def progress(fraction: float, text: str) -> None:
            self.post_message(LoadProgress(fraction, text))

        try:
            self.engine.load(self.model_arg, self.sae_arg, progress=progress)
        except Exception as err:  # noqa: BLE001 - shown on the loading screen or as a notification
            self.post_message(LoadFinished(first_line(err), fatal=self.engine.lm is None))
            return
        self.post_message(LoadFinished(None, False))

    def on_load_progress(self, message: LoadProgress) -> None:
        if isinstance(self.screen, LoadingScreen):
            self.screen.set_progress(message.fraction, message.text)

    def on_load_finished(self, message: LoadFinished) -> None:
        if message.fatal:
            if isinstance(self.screen, LoadingScreen):
                self.screen.show_error(message.error or "unknown error")
            return
        if isinstance(self.screen, LoadingScreen):
            self.pop_screen()
        if message.error:
            self.notify(
                f"{message.error}. Continuing without SAE: baseline only.",
                title="Could not load the SAE",
                severity="error",
                timeout=10,
            )
        self.loaded()

    def loaded(self) -> None:
        for notice in self.engine.notices:
            self.notify(notice, timeout=8)
        self.refresh_all()
        self.prompt_box.focus()
        self.start_session()

    # ------------------------------------------------------------ views
    def refresh_all(self) -> None:
        self.refresh_status()
        self.refresh_features()
        self.refresh_panes()

    def refresh_status(self) -> None:
        e = self.engine
        s = e.settings
        sampling = (
            "greedy"
            if s.temperature == 0
            else f"T={s.temperature:g} top-p={s.top_p:g} seed={s.seed}"
        )
        mode = "chat" if e.chat_mode else "completion"
        parts = [
            ("steer", "bold $accent"),
            "  ",
            (e.model_name, "bold"),
            " · ",
            e.sae_name,
            " · ",
            (mode, "$accent"),
            " · ",
            sampling,
            f" · {s.max_new_tokens} tok",
            f" · steer {s.positions}",
        ]
        if self.auto_regenerate:
            parts.append(" · auto")
        self.status_line.update(Content.assemble(*parts))
        prompt = self.prompt_box
        prompt.placeholder = (
            "Message the model · enter sends · ctrl+l new chat"
            if e.chat_mode
            else "Text to complete · enter generates"
        )

    def slider_span(self) -> float:
        return self.engine.slider_steps()[1] * 4

    def refresh_features(self) -> None:
        e = self.engine
        panel = self.feature_panel
        if not e.has_sae:
            empty = "No SAE loaded: baseline only.\nOpen one with --sae DIR or ctrl+p."
        else:
            empty = "No active features.\nctrl+f finds features by text or label."
        panel.sync(e.features, e.caption, e.slider_steps(), self.slider_span(), empty)
        self.show_expression()
        on = sum(f.enabled for f in e.features)
        panel.border_title = f"Features {on}/{len(e.features)}" if e.features else "Features"
        panel.border_subtitle = f"strength {e.strength_unit}" if e.has_sae else ""

    def show_expression(self) -> None:
        """The expression line follows the levers, except under the user's cursor."""
        if not self.expression_line.has_focus:
            self.expression_line.value = self.engine.expression

    def transcript(self, row: int) -> Content:
        """What a pane shows: past chat turns (dim), the prompt, and this row's reply."""
        parts: list = []
        if self.view_prompt is None:
            if row == 1 and not self.engine.has_sae:
                return Content.styled("No SAE loaded: only the baseline runs.", "dim")
            return Content.styled("Completions appear here.", "dim")
        chat = self.engine.chat_mode
        if chat:
            for turn in self.view_history:
                parts += [
                    ("you › ", "bold $accent"),
                    (turn.user, "dim"),
                    "\n",
                    # Both rows continue the steered conversation: say so in the baseline pane.
                    ("model › " if row == 1 else "steered › ", "bold"),
                    (turn.steered, "dim"),
                    "\n\n",
                ]
            parts += [("you › ", "bold $accent"), self.view_prompt, "\n", ("model › ", "bold")]
        else:
            parts.append((self.view_prompt, "dim"))
        if row == 1 and not self.engine.has_sae:
            parts.append(("\n(no SAE loaded: baseline only)", "dim italic"))
        else:
            parts.append(self.texts[row].lstrip() if chat else self.texts[row])
        return Content.assemble(*parts)

    def refresh_panes(self) -> None:
        for row, pane in enumerate(self.panes):
            pane.show(self.transcript(row))
            pane.border_subtitle = self.status_text[row]
        n_on = sum(f.enabled for f in self.engine.features)
        title = "Steered"
        if self.engine.has_sae:
            title += f" · {n_on} feature{'s' if n_on != 1 else ''}"
        self.panes[1].border_title = title

    @on(Input.Submitted, "#steer-expr")
    def expression_submitted(self, event: Input.Submitted) -> None:
        """An edited expression replaces the levers; a bad one changes nothing and says
        where it is wrong (one line, the column)."""
        try:
            self.engine.set_expression(event.value)
        except ValueError as err:
            self.notify(first_line(err), title="Steering expression", severity="error")
            return
        self.expression_line.value = self.engine.expression
        self.refresh_features()
        self.refresh_panes()
        self.prompt_box.focus()
        self.schedule_auto_regenerate()

    def on_descendant_blur(self, event) -> None:
        if event.widget is getattr(self, "expression_line", None):  # show what is in force
            self.expression_line.value = self.engine.expression

    # ------------------------------------------------------------ generation
    @on(Input.Submitted, "#prompt")
    def prompt_submitted(self, event: Input.Submitted) -> None:
        prompt = event.value
        if not prompt.strip():
            self.notify("type a prompt first", severity="warning")
            return
        if self.engine.chat_mode:
            event.input.value = ""
        self.start_generation(prompt)

    def start_generation(self, prompt: str) -> None:
        if self.engine.lm is None:
            self.notify("the model is not loaded yet", severity="warning")
            return
        self.gen_id += 1
        self.last_prompt = prompt
        self.view_prompt = prompt
        self.view_history = list(self.engine.history) if self.engine.chat_mode else []
        self.texts = ["", ""]
        self.status_text = ["generating…", "generating…" if self.engine.has_sae else ""]
        self.generating = True
        self.run_started()
        self.refresh_panes()
        self.generate_worker(prompt, self.gen_id)

    @work(thread=True, exclusive=True, group="generate", exit_on_error=False)
    def generate_worker(self, prompt: str, gen_id: int) -> None:
        worker = get_current_worker()
        error = None
        try:
            with self.engine.inference_context():
                stream = self.engine.generate(prompt, cancel=lambda: worker.is_cancelled)
                with contextlib.closing(stream):
                    for events in stream:
                        self.post_message(TokensArrived(gen_id, events))
                        if worker.is_cancelled:
                            break
        except Exception as err:  # noqa: BLE001 - becomes a notification, never a crash
            error = first_line(err)
        self.post_message(GenerationEnded(gen_id, worker.is_cancelled, error))

    def on_tokens_arrived(self, message: TokensArrived) -> None:
        if message.gen_id != self.gen_id:
            return  # a cancelled generation's last tokens
        for event in message.events:
            if 0 <= event.row < len(self.texts):
                self.texts[event.row] += event.text
                if event.done:
                    self.status_text[event.row] = "done"
        counts = self.engine.last.token_ids if self.engine.last is not None else []
        for row, ids in enumerate(counts[:2]):
            if self.status_text[row] != "done":
                self.status_text[row] = f"generating… {len(ids)} tok"
        self.refresh_panes()

    def on_generation_ended(self, message: GenerationEnded) -> None:
        if message.gen_id != self.gen_id:
            return
        self.generating = False
        self.run_ended()
        counts = self.engine.last.token_ids if self.engine.last is not None else []
        for row in range(2):
            if row == 1 and not self.engine.has_sae:
                self.status_text[row] = ""
                continue
            n = len(counts[row]) if row < len(counts) else 0
            state = "error" if message.error else "cancelled" if message.cancelled else "done"
            self.status_text[row] = f"{state} · {n} tok"
        if message.error:
            self.notify(message.error, title="Generation failed", severity="error", timeout=10)
        elif message.cancelled:
            self.notify("generation cancelled", timeout=3)
        elif self.engine.has_sae:
            self.measure_coherence(message.gen_id)
        self.refresh_panes()

    def action_cancel(self) -> None:
        if self.generating:
            self.workers.cancel_group(self, "generate")
            self.status_text = ["cancelling…", "cancelling…" if self.engine.has_sae else ""]
            self.refresh_panes()

    def watch_generating(self) -> None:
        self.refresh_bindings()

    def check_action(self, action: str, parameters) -> bool | None:
        if action == "cancel":
            return self.generating  # hidden from the footer when nothing runs
        return True

    def action_regenerate(self) -> None:
        if self.last_prompt is None:
            self.notify(
                "nothing to regenerate yet: type a prompt and press enter", severity="warning"
            )
            return
        if not self.generating:
            self.engine.forget_last_turn(self.last_prompt)
        self.start_generation(self.last_prompt)

    def action_new_chat(self) -> None:
        self.workers.cancel_group(self, "generate")
        self.engine.clear_history()
        self.view_prompt, self.view_history, self.last_prompt = None, [], None
        self.texts, self.status_text = ["", ""], ["", ""]
        self.generating = False
        self.gen_id += 1
        self.refresh_panes()
        self.notify("new chat", timeout=2)

    def action_toggle_chat(self) -> None:
        if not self.engine.is_chat_model:
            self.notify(
                f"{self.engine.model_name} has no chat template: plain completion only",
                severity="warning",
            )
            return
        self.attempt(self.engine.update_settings, chat=not self.engine.chat_mode)
        self.notify("chat mode" if self.engine.chat_mode else "plain completion mode", timeout=3)
        self.refresh_status()

    # ------------------------------------------------------------ features
    def attempt(self, function, *args, **kwargs):
        """Run an engine call; an error becomes a notification, never a crash."""
        try:
            return function(*args, **kwargs)
        except (ValueError, OSError) as err:  # bad input: the message is for the user
            self.notify(first_line(err), severity="error", timeout=8)
        except Exception as err:  # noqa: BLE001 - a bug: say what, keep the app alive
            self.log.error(f"{type(err).__name__}: {err}")
            self.notify(f"{type(err).__name__}: {first_line(err)}", severity="error", timeout=10)
        return None

    def add_feature(
        self, latent: int, strength: float | None = None, mode: str | None = None
    ) -> None:
        existed = self.engine.feature(latent) is not None
        extra = {"mode": mode} if mode is not None else {}
        feature = self.attempt(self.engine.add_feature, latent, strength, **extra)
        if feature is None:
            return
        self.refresh_features()
        self.refresh_panes()
        label = self.engine.label(latent)
        if existed:
            self.notify(f"#{latent} is already active", timeout=3)
        else:
            self.notify(
                f"added #{latent} {label} · {feature.mode} {feature.strength:g} "
                f"{self.engine.strength_unit}".replace("  ", " "),
                timeout=3,
            )
        self.call_after_refresh(self.focus_feature, latent)

    def on_slider_typed_text(self, message: Slider.TypedText) -> None:
        """Text typed on the feature panel is the start of a prompt: it goes there."""
        self.query_one("#prompt", PromptInput).take_text(message.text)

    def action_undo_remove(self) -> None:
        feature = self.attempt(self.engine.undo_remove)
        if feature is None:
            return
        self.refresh_features()
        self.refresh_panes()
        self.notify(f"brought back #{feature.latent}", timeout=3)
        self.call_after_refresh(self.focus_feature, feature.latent)
        self.schedule_auto_regenerate()

    def focus_feature(self, latent: int) -> None:
        row = self.feature_panel.row(latent)
        if row is not None:
            row.slider.focus()

    def inspect_feature(self, latent: int) -> None:
        self.push_screen(InspectorScreen(self.engine, latent))

    def show_token_view(self, latent: int) -> None:
        if self.engine.last is None:
            self.notify(
                "generate something first: the per-token view reads the last prompt and completions",
                severity="warning",
            )
            return
        self.push_screen(TokenViewScreen(self.engine, latent))

    def focused_latent(self) -> int | None:
        node = self.focused
        while node is not None:
            if isinstance(node, FeatureRow):
                return node.latent
            node = node.parent
        return None

    def on_feature_row_request(self, message: FeatureRow.Request) -> None:
        latent, what = message.latent, message.what
        if self.engine.feature(latent) is None:
            return  # a row already removed (a second key before it left the screen)
        if what == "toggle":
            self.attempt(self.engine.toggle, latent)
        elif what == "mode":
            self.attempt(self.engine.cycle_mode, latent)
        elif what == "remove":
            rows = [f.latent for f in self.engine.features]
            self.attempt(self.engine.remove_feature, latent)
            rest = [x for x in rows if x != latent]
            if rest:
                index = min(rows.index(latent), len(rest) - 1)
                self.call_after_refresh(self.focus_feature, rest[index])
            else:
                self.call_after_refresh(self.prompt_box.focus)
        elif what == "inspect":
            self.inspect_feature(latent)
            return
        elif what == "tokens":
            self.show_token_view(latent)
            return
        self.refresh_features()
        self.refresh_panes()
        self.schedule_auto_regenerate()

    def on_slider_changed(self, message: Slider.Changed) -> None:
        row = message.slider.parent.parent if message.slider.parent else None
        if isinstance(row, FeatureRow) and self.engine.feature(row.latent) is not None:
            feature = self.engine.feature(row.latent)
            if feature.strength != message.value:
                self.engine.set_strength(row.latent, message.value)
                self.show_expression()
                self.schedule_auto_regenerate()

    def schedule_auto_regenerate(self) -> None:
        if not self.auto_regenerate or self.last_prompt is None:
            return
        if self._auto_timer is not None:
            self._auto_timer.stop()
        self._auto_timer = self.set_timer(AUTO_REGENERATE_DELAY, self.action_regenerate)

    def open_sae(self, path: str) -> None:
        self.notify(f"loading SAE {path}", timeout=3)
        self.open_sae_worker(path)

    @work(thread=True, exclusive=True, group="load", exit_on_error=False)
    def open_sae_worker(self, path: str) -> None:
        try:
            self.engine.load_sae(path)
        except Exception as err:  # noqa: BLE001
            self.call_from_thread(
                self.notify,
                first_line(err),
                title="Could not load the SAE",
                severity="error",
                timeout=10,
            )
            return
        self.call_from_thread(self.sae_opened)

    def sae_opened(self) -> None:
        for notice in self.engine.notices:
            self.notify(notice, timeout=8)
        self.notify(f"SAE: {self.engine.sae_name}", timeout=5)
        self.refresh_all()

    # ------------------------------------------------------------ screens
    def action_command_palette(self) -> None:
        """Textual's palette, guarded (steer.tui.palette.SafePalette)."""
        if self.use_command_palette and not SafePalette.is_open(self):
            self.push_screen(SafePalette(id="--command-palette"))

    def get_system_commands(self, screen):
        """The palette's actions: Textual's own plus the playground's."""
        yield from super().get_system_commands(screen)
        yield SystemCommand(
            "Find features",
            "which features fire on a text, or search labels (ctrl+f)",
            self.action_find,
        )
        yield SystemCommand(
            "Steer toward…",
            "features that make the model talk about a concept, at a sane strength",
            self.action_steer_toward,
        )
        yield SystemCommand(
            "Regenerate", "run the last prompt again (ctrl+r)", self.action_regenerate
        )
        yield SystemCommand(
            "Generation settings",
            "temperature, top-p, max tokens, seed, positions (ctrl+g)",
            self.action_settings,
        )
        yield SystemCommand(
            "Save preset",
            "save the active features as JSON (ctrl+s)",
            partial(self.action_presets, True),
        )
        yield SystemCommand(
            "Load preset",
            "replace the active features with a saved set (ctrl+o)",
            self.action_presets,
        )
        yield SystemCommand(
            "New chat", "clear the history and the panes (ctrl+l)", self.action_new_chat
        )
        yield SystemCommand(
            "Chat / completion mode",
            "switch between chat template and plain text (ctrl+n)",
            self.action_toggle_chat,
        )
        yield SystemCommand(
            "Per-token view", "how a feature fires on each token (ctrl+t)", self.action_tokens
        )
        yield SystemCommand(
            "Why this token?",
            "the features that caused a token of either completion (ctrl+y)",
            self.action_why,
        )
        yield SystemCommand(
            "Run history", "earlier runs: show, bring back, export (f6)", self.action_history
        )
        yield SystemCommand(
            "Export run history", "JSON and Markdown of every run", self.export_runs
        )
        yield SystemCommand("Help: every key", "the playground's keys (F1)", self.action_help)

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_find(self) -> None:
        if not self.engine.has_sae:
            self.notify("no SAE loaded: there are no features to find", severity="warning")
            return
        self.push_screen(FindScreen(self.engine))

    def action_steer_toward(self) -> None:
        if not self.engine.has_sae:
            self.notify("no SAE loaded: there are no features to steer with", severity="warning")
            return
        self.push_screen(FindScreen(self.engine, toward=True))

    def action_tokens(self) -> None:
        latent = self.focused_latent()
        if latent is None and self.engine.features:
            latent = self.engine.features[0].latent
        if latent is None:
            self.notify("add a feature first (ctrl+f)", severity="warning")
            return
        self.show_token_view(latent)

    def action_web(self) -> None:
        if not self.engine.has_sae:
            self.notify("no SAE loaded: there is no feature web", severity="warning")
            return
        view = self.attempt(self.engine.feature_web)
        if view is None:
            self.notify(
                f"no feature web for this SAE: build one with  steer web --sae {self.engine.sae_path}",
                severity="warning",
            )
            return
        self.push_screen(WebScreen(self.engine, view))

    def action_why(self) -> None:
        """Pick a token of either completion: the latents that caused it (steer.app.why)."""
        gen = self.engine.last
        if gen is None or not any(gen.token_ids):
            self.notify("generate something first: then ask why a token came", severity="warning")
            return
        if not self.engine.has_sae:
            self.notify("no SAE loaded: attribution needs one", severity="warning")
            return
        self.push_screen(WhyScreen(self.engine), self.why_closed)

    def why_closed(self, latent: int | tuple | None) -> None:
        """The lever pulled in the why screen: ablate that latent and regenerate; or a
        circuit node (layer, latent, mode) to make a lever of."""
        if isinstance(latent, tuple):
            self.circuit_lever(*latent)
            return
        if latent is None or self.attempt(self.engine.ablate_lever, latent) is None:
            return
        self.notify(f"ablating #{latent} {self.engine.label(latent)}; regenerating", timeout=4)
        self.refresh_features()
        self.action_regenerate()

    @work(thread=True, exclusive=True, group="load", exit_on_error=False)
    def circuit_lever(self, layer: int, latent: int, mode: str) -> None:
        """A circuit node as a lever: at another depth the engine opens that SAE first."""
        try:
            lever, switched = self.engine.circuit_lever(layer, latent, mode)
        except Exception as err:  # noqa: BLE001
            self.call_from_thread(
                self.notify, first_line(err), title="No lever", severity="error", timeout=8
            )
            return
        self.call_from_thread(self.circuit_lever_set, lever, switched)

    def circuit_lever_set(self, lever, switched: bool) -> None:
        if switched:
            self.notify(f"SAE: {self.engine.sae_name} (the previous SAE's levers are cleared)")
            self.refresh_all()
        else:
            self.refresh_features()
        what = "ablating" if lever.mode == "ablate" else "added"
        self.notify(f"{what} #{lever.latent} {self.engine.label(lever.latent)}", timeout=4)
        if lever.mode == "ablate":
            self.action_regenerate()

    def action_settings(self) -> None:
        e = self.engine
        self.push_screen(
            SettingsScreen(e.settings, e.is_chat_model, e.chat_mode, self.auto_regenerate),
            self.settings_closed,
        )

    def settings_closed(self, changes: dict | None) -> None:
        if changes is None:
            return
        self.auto_regenerate = bool(changes.pop("auto_regenerate", self.auto_regenerate))
        if self.attempt(self.engine.update_settings, **changes) is not None:
            self.notify("settings applied", timeout=2)
        self.refresh_status()
        self.refresh_panes()

    def action_presets(self, save: bool = False) -> None:
        self.push_screen(
            PresetsScreen(self.engine.list_presets(), self.engine.presets_dir, save),
            self.presets_closed,
        )

    def presets_closed(self, result: tuple[str, str] | None) -> None:
        if result is None:
            return
        what, name = result
        if what == "save":
            self.save_preset(name)
        else:
            self.load_preset(name)

    def save_preset(self, name: str) -> None:
        if not self.engine.features:
            self.notify("no active features: the preset would be empty", severity="warning")
        path = self.attempt(self.engine.save_preset, name)
        if path is not None:
            self.notify(
                f"saved {path}\n(steer generate --preset {path})", title="Preset saved", timeout=6
            )

    def load_preset(self, name: str) -> None:
        path = self.attempt(self.engine.load_preset, name)
        if path is not None:
            self.notify(
                f"loaded {Path(path).name}: {len(self.engine.features)} features", timeout=4
            )
            self.refresh_all()
