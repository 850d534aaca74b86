"""Errors never end the playground: they are logged, shown, and the app goes on.

Textual ends the app on any exception that reaches it (`App._handle_exception`). Here an
exception raised while the app, one of our screens or one of our widgets handles a
message (a key, a binding's action, a worker's message, a callback) is caught where it
is dispatched, written with its traceback to the error log under the user's state
folder (steer.app.session.errors_log_path) and shown as a notification. Workers that
fail and timers that raise are contained the same way. Only what cannot be contained (an
error inside one of Textual's own widgets, whose message loop has already stopped, or
while composing a screen) ends the app: with exit code 1 and one line naming the log
and the saved session (`crash_message`), never a traceback on the terminal.
"""

from __future__ import annotations

import inspect
import traceback
from functools import partial
from pathlib import Path

from textual.worker import WorkerFailed

from steer.app.session import errors_log_path, now


def write_log(path: Path, error: BaseException, where: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    with open(path, "a", encoding="utf-8") as log:
        log.write(f"--- {now()} {where}\n{text}\n")


def describe(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


class _Guarded:
    """Shared by the app and its screens and widgets: wrap what Textual runs for us."""

    async def _dispatch_message(self, message) -> None:
        try:
            await super()._dispatch_message(message)
        except Exception as error:  # noqa: BLE001 - contained: logged and shown
            self.app.contain_error(
                error, f"{type(self).__name__} handling {type(message).__name__}"
            )

    def _guard(self, callback):
        """`callback` (called with no arguments, as timers and callbacks are), contained."""

        async def guarded():
            try:
                result = callback()
                if inspect.isawaitable(result):
                    result = await result
                return result
            except Exception as error:  # noqa: BLE001 - contained: logged and shown
                self.app.contain_error(error, f"callback {getattr(callback, '__name__', callback)}")

        return guarded

    def call_after_refresh(self, callback, *args, **kwargs) -> bool:
        return super().call_after_refresh(self._guard(partial(callback, *args, **kwargs)))

    def call_next(self, callback, *args, **kwargs) -> None:
        super().call_next(self._guard(partial(callback, *args, **kwargs)))

    def set_timer(self, delay, callback=None, *args, **kwargs):
        callback = self._guard(callback) if callback is not None else None
        return super().set_timer(delay, callback, *args, **kwargs)

    def set_interval(self, interval, callback=None, *args, **kwargs):
        callback = self._guard(callback) if callback is not None else None
        return super().set_interval(interval, callback, *args, **kwargs)


class Contained(_Guarded):
    """Mixin for our screens and widgets (put it first among the bases)."""


class ErrorContainment(_Guarded):
    """Mixin for the App (first among the bases). `contained` lists what was caught."""

    errors_log: Path | None = None
    crash_message: str | None = None

    def _contained_list(self) -> list[str]:
        if not hasattr(self, "_contained"):
            self._contained: list[str] = []
        return self._contained

    @property
    def contained(self) -> list[str]:
        return self._contained_list()

    @property
    def log_path(self) -> Path:
        return self.errors_log or errors_log_path()

    def contain_error(self, error: BaseException, where: str = "") -> None:
        """Log `error` with its traceback, tell the user, keep going."""
        summary = describe(error)
        self._contained_list().append(summary)
        try:
            write_log(self.log_path, error, where)
            shown = f"{summary}\n(logged in {self.log_path})"
        except OSError as log_error:
            shown = f"{summary}\n(the error log could not be written: {log_error})"
        try:
            self.notify(shown, title="Something went wrong", severity="error", timeout=10)
        except Exception:  # noqa: BLE001 - the notification is a courtesy
            pass

    def _handle_exception(self, error: Exception) -> None:
        if isinstance(error, WorkerFailed):
            self.contain_error(error.error, "worker")
            return
        self.crash(error)

    def crash(self, error: Exception) -> None:
        """Leave after an error that could not be contained: log it, save the session,
        exit with status 1; the CLI prints `crash_message`."""
        try:
            write_log(self.log_path, error, "not contained")
            log_note = f"log: {self.log_path}"
        except OSError:
            log_note = "the error log could not be written"
        try:
            # SessionKeeping (steer.tui.record) saves the session and says where.
            save = getattr(self, "save_before_exit", None)
            saved = save() if save is not None else None
        except Exception:  # noqa: BLE001 - we are leaving anyway
            saved = None
        session_note = f"session saved: {saved}" if saved else "the session could not be saved"
        self.crash_message = (
            f"steer chat stopped after an error it could not recover from "
            f"({describe(error)}); {log_note}; {session_note}"
        )
        self._return_code = 1
        if self._exception is None:  # Pilot re-raises it in tests
            self._exception = error
            self._exception_event.set()
        self._close_messages_no_wait()


class Dialog(Contained):
    """Mixin for our modal screens: contained errors, and a dismiss that happens once.

    Two quick enters (or enter then escape) each dismissed the screen: the second popped
    whatever screen lay beneath, and with only the main screen left Textual raised
    ScreenStackError and ended the app."""

    def dismiss(self, result=None):
        if not self.is_current:
            return None  # already dismissed: the key came before the screen left
        return super().dismiss(result)
