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


@pytest.fixture
def anyio_backend():
    return "asyncio"


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
