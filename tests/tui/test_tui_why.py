"""Why this token? in the playground: pick a token, see its causes, pull the lever."""

from __future__ import annotations

import functools

import pytest
from builders import PROMPT, make_engine
from builders import settle as builders_settle

from steer.tui.app import PlaygroundApp
from steer.tui.screens import WhyScreen

pytestmark = pytest.mark.anyio


settle = functools.partial(builders_settle, rounds=2)  # a worker's result starts another


def body(app) -> str:
    return str(app.screen.query_one("#why-body").render())


async def test_pick_a_token_see_its_causes_ablate_one_and_regenerate(tmp_path):
    engine = make_engine(tmp_path)
    engine.add_feature(3, strength=2.0)
    app = PlaygroundApp(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("ctrl+y")  # nothing generated yet: a warning, no screen
        assert not isinstance(app.screen, WhyScreen)
        app.query_one("#prompt").value = PROMPT
        app.query_one("#prompt").focus()
        await pilot.press("enter")
        await settle(pilot)
        gen = engine.last
        await pilot.press("ctrl+y")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, WhyScreen)
        # It opens on the last steered token and explains it at once.
        assert (screen.row, screen.index) == (1, len(gen.token_ids[1]) - 1)
        view = screen.view
        assert view is not None and view.row == 1 and view.rows
        assert "unexplained" in body(app) and f"#{view.rows[0].latent}" in body(app)
        assert view.rows[0].label in body(app)
        # Keys: the other pane, one token left, explain that one.
        await pilot.press("tab", "left", "enter")
        await settle(pilot)
        assert (
            (screen.view.row, screen.view.index)
            == (0, screen.index)
            == (0, len(gen.token_ids[0]) - 2)
        )
        # A click picks a token too.
        screen.action_pick(1, 0)
        await settle(pilot)
        assert (screen.view.row, screen.view.index) == (1, 0)
        # Select the second latent: its driving tokens are shown; `a` ablates it.
        await pilot.press("down")
        chosen = screen.view.rows[1].latent
        assert f"#{chosen} at" in body(app)
        gen_id = app.gen_id
        await pilot.press("a")
        await settle(pilot)
        assert not isinstance(app.screen, WhyScreen)
        lever = engine.feature(chosen)
        assert lever is not None and lever.mode == "ablate" and lever.enabled
        assert app.gen_id == gen_id + 1 and engine.last is not gen and engine.last.finished
        assert any(iv.latent == chosen and iv.mode == "ablate" for iv in engine.last.levers)
