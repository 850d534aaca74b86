"""The playground survives every key: the palette's page keys, contained errors, random keys."""

from __future__ import annotations

import asyncio

import pytest
from builders import make_engine
from textual import events
from textual.command import CommandList, CommandPalette

from steer.tui.app import PlaygroundApp

SIZE = (120, 40)
pytestmark = pytest.mark.anyio


def send_at_once(app, *keys: str) -> None:
    """Queue key events the way a terminal delivers keys typed quickly: no wait between
    them for the app to settle (Pilot's `press` waits, which hides timing bugs)."""
    for key in keys:
        event = events.Key(key, key if len(key) == 1 else None)
        event.set_sender(app)
        app._driver.send_message(event)


async def test_palette_page_keys_right_after_ctrl_p(tmp_path):
    app = PlaygroundApp(make_engine(tmp_path))
    async with app.run_test(size=SIZE) as pilot:
        for delay in (0, 0.005, 0.02, 0.05, 0.15, 0.2):
            for key in ("pagedown", "pageup"):
                send_at_once(app, "ctrl+p")
                await asyncio.sleep(delay)
                send_at_once(app, key, key, key)
                await pilot.pause(0.05)
                assert app.is_running and isinstance(app.screen, CommandPalette)
                await pilot.press("escape")
                await pilot.pause()
                assert not isinstance(app.screen, CommandPalette)
        # Laid out, the page keys still move by a page through the commands.
        await pilot.press("ctrl+p")
        await pilot.pause(0.5)
        commands = app.screen.query_one(CommandList)
        assert commands.option_count > 5 and commands.highlighted == 0
        await pilot.press("pagedown")
        assert commands.highlighted > 1
        await pilot.press("pageup")
        assert commands.highlighted == 0


# ---------------------------------------------------------------- errors are contained
async def test_errors_in_actions_handlers_workers_and_timers_are_contained(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("planted failure")

    monkeypatch.setattr(PlaygroundApp, "action_help", broken)
    monkeypatch.setattr(PlaygroundApp, "on_feature_row_request", broken)
    app = PlaygroundApp(make_engine(tmp_path))
    app.errors_log = tmp_path / "errors.log"
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f1")  # a binding's action
        app.add_feature(3)
        await pilot.pause()
        await pilot.press("ctrl+d")  # a message handled by the app (the row's request)
        app.run_worker(broken, thread=True)  # a worker with Textual's default exit_on_error
        app.set_timer(0.01, broken)
        await pilot.pause(0.1)
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert app.is_running
        assert app.contained == ["RuntimeError: planted failure"] * 4
        shown = [n.message for n in app._notifications]
        assert any("planted failure" in m and str(app.errors_log) in m for m in shown)
        log = app.errors_log.read_text()
        assert log.count("RuntimeError: planted failure") == 4 and "Traceback" in log
        await pilot.press("ctrl+f")  # and the app still answers keys
        assert type(app.screen).__name__ == "FindScreen"


async def test_an_error_that_cannot_be_contained_exits_with_one_line(tmp_path, monkeypatch):
    from textual.widgets import Input

    async def broken_key(self, event):
        raise RuntimeError("inside Textual's own widget")

    monkeypatch.setattr(Input, "_on_key", broken_key)
    app = PlaygroundApp(make_engine(tmp_path), session_path=tmp_path / "session.json")
    app.errors_log = tmp_path / "errors.log"
    with pytest.raises(RuntimeError, match="own widget"):
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("a")
            await pilot.pause()
    assert app.return_code == 1
    message = app.crash_message
    assert "\n" not in message and str(app.errors_log) in message
    assert f"session saved: {tmp_path / 'session.json'}" in message
    assert "inside Textual's own widget" in app.errors_log.read_text()


def test_chat_command_exits_non_zero_with_the_crash_line(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from steer.cli.main import app as cli

    def crashed_run(self):
        self.crash_message = "steer chat stopped after an error ...; log: X; session saved: Y"
        self._return_code = 1

    monkeypatch.setattr("steer.app.engine.find_default_sae", lambda: tmp_path)
    monkeypatch.setattr(PlaygroundApp, "run", crashed_run)
    result = CliRunner().invoke(cli, ["chat"])
    assert result.exit_code == 1
    assert (
        result.output.strip() == "steer chat stopped after an error ...; log: X; session saved: Y"
    )


def test_chat_reopens_the_last_session_or_starts_fresh(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from steer.app.session import Session, save_session
    from steer.cli.main import app as cli

    sae = tmp_path / "sae"
    sae.mkdir()
    path = save_session(tmp_path / "s.json", Session(model="tiny", sae=str(sae), prompt="hi"))
    seen = {}

    def run(self):
        seen.update(model=self.model_arg, sae=self.sae_arg, session=self.session)

    monkeypatch.setattr(PlaygroundApp, "run", run)
    result = CliRunner().invoke(cli, ["chat", "--session", str(path)])
    assert result.exit_code == 0, result.output
    assert seen["model"] == "tiny" and seen["sae"] == sae and seen["session"].prompt == "hi"

    result = CliRunner().invoke(cli, ["chat", "--session", str(path), "--new"])
    assert result.exit_code == 0 and seen["session"] is None
    (kept,) = (tmp_path / "sessions").iterdir()  # the old session is kept, not lost
    assert "s-" in kept.name and not path.exists()
