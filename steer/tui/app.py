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
from pathlib import Path

from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.content import Content
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import Footer, Input, Static
from textual.worker import get_current_worker

from .dialogs import DialogActions
from .errors import ErrorContainment
from .feature_actions import FeatureActions
from .main_view import MainView
from .meter import CoherenceMeter
from .model_loading import ModelLoading
from .palette import CheckpointCommands, FeatureCommands, PresetCommands
from .preset_actions import PresetActions
from .record import SessionKeeping
from .screens import LoadingScreen, first_line
from .system_commands import SystemCommands
from .why_actions import WhyActions
from .widgets import CompletionPane, FeaturePanel, PromptInput

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


TYPING_HINT = Content.styled(
    "typing → the prompt · on a feature: digits set its strength, ←/→ nudge, "
    "ctrl+d mute, ctrl+e mode, del remove, ctrl+z undo",
    "dim",
)


class PlaygroundApp(
    ErrorContainment,
    SessionKeeping,
    CoherenceMeter,
    ModelLoading,
    MainView,
    FeatureActions,
    DialogActions,
    PresetActions,
    WhyActions,
    SystemCommands,
    App,
):
    """Baseline and steered completions side by side, features on sliders.

    This class holds the layout, the generation worker and its messages; the mixins
    (one module each under steer/tui/) hold the rest: loading the model and SAEs
    (model_loading), redrawing the main screen (main_view), the feature panel's actions
    (feature_actions), the dialogs (dialogs), presets (preset_actions), why this token and
    its circuit (why_actions), the command palette (system_commands), the session and run
    history (record) and the coherence meter (meter)."""

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

    # ------------------------------------------------------------ the steering expression
    # (@on handlers stay on this class: Textual collects them from App subclasses only)
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

    # ------------------------------------------------------------ engine calls
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

    def schedule_auto_regenerate(self) -> None:
        if not self.auto_regenerate or self.last_prompt is None:
            return
        if self._auto_timer is not None:
            self._auto_timer.stop()
        self._auto_timer = self.set_timer(AUTO_REGENERATE_DELAY, self.action_regenerate)
