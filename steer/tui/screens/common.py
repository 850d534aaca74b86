"""What the screens share: error lines, and handing worker results to the UI thread."""

from __future__ import annotations

from textual import work
from textual.content import Content
from textual.screen import ModalScreen, Screen
from textual.widgets import Static

from ..errors import Dialog


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


class FetchingDialog(Dialog, ModalScreen[None]):
    """A dialog whose content the engine computes: `load()` runs in a thread worker (the
    UI stays live while a generation holds the model), its result goes to `show`, an
    error to `show_error` (one line in the body). Subclasses compose `self.body`."""

    body: Static

    def on_mount(self) -> None:
        self.fetch()

    def load(self):
        raise NotImplementedError

    def show(self, data) -> None:
        raise NotImplementedError

    @work(thread=True, exclusive=True, group="fetch", exit_on_error=False)
    def fetch(self) -> None:
        try:
            data = self.load()
        except Exception as err:  # noqa: BLE001 - shown in the dialog
            deliver(self, self.show_error, err)
            return
        deliver(self, self.show, data)

    def show_error(self, err: BaseException) -> None:
        self.body.update(error_text(err))
