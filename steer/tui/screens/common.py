"""What the screens share: error lines, and handing worker results to the UI thread."""

from __future__ import annotations

from textual.content import Content
from textual.screen import Screen


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
