"""Loading in the playground: the model and SAE at start (a thread worker posting its
progress to the loading screen) and another SAE opened later (the command palette or a
circuit node). A mixin of PlaygroundApp (steer.tui.app)."""

from __future__ import annotations

from textual import work
from textual.message import Message

from .screens import LoadingScreen, first_line


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


class ModelLoading:
    """Mixin for PlaygroundApp (before App among the bases)."""

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
