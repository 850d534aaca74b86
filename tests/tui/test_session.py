"""The playground keeps its session: saved as it changes, reopened, damaged files read as
far as they go; every run recorded, flipped through and exported."""

from __future__ import annotations

import json

import pytest
from builders import PROMPT, make_engine, settle

from steer.app.session import load_session, state_dir
from steer.tui.app import PlaygroundApp
from steer.tui.record import HistoryScreen
from steer.tui.widgets import FeatureRow

SIZE = (120, 40)
pytestmark = pytest.mark.anyio


def notifications(app) -> list[str]:
    return [n.message for n in app._notifications]


async def test_session_is_saved_as_it_changes_and_reopened(tmp_path):
    path = tmp_path / "session.json"
    app = PlaygroundApp(make_engine(tmp_path), session_path=path)
    async with app.run_test(size=SIZE) as pilot:
        app.add_feature(3)
        await pilot.pause()
        await pilot.press(*"2.5", "enter", "ctrl+e")  # strength 2.5 ×max, mode add
        app.add_feature(9)
        await pilot.pause()
        await pilot.press("ctrl+d")  # muted
        app.query_one("#prompt").value = "Tell me about bridges"
        await pilot.press("ctrl+g")
        app.screen.query_one("#max_new_tokens").value = "5"
        await pilot.press("ctrl+s")
        await pilot.pause(0.7)  # the autosave looks every 0.5 s
        data = json.loads(path.read_text())  # written while the app runs
        assert data["features"] == [
            {"latent": 3, "strength": 2.5, "mode": "add", "enabled": True},
            {"latent": 9, "strength": 10.0, "mode": "clamp", "enabled": False},
        ]
        assert data["prompt"] == "Tell me about bridges"
        assert data["settings"]["max_new_tokens"] == 5

    saved, dropped = load_session(path)
    assert dropped == []
    again = PlaygroundApp(make_engine(tmp_path), session_path=path, session=saved)
    async with again.run_test(size=SIZE) as pilot:
        await pilot.pause()
        features = [(f.latent, f.strength, f.mode, f.enabled) for f in again.engine.features]
        assert features == [(3, 2.5, "add", True), (9, 10.0, "clamp", False)]
        assert [row.latent for row in again.query(FeatureRow)] == [3, 9]
        assert again.query_one(FeatureRow).slider.value == 2.5
        assert again.query_one("#prompt").value == "Tell me about bridges"
        assert again.engine.settings.max_new_tokens == 5
        assert any("reopened" in m for m in notifications(again))


async def test_a_damaged_session_opens_what_it_can_and_says_what_it_dropped(tmp_path):
    path = tmp_path / "session.json"
    path.write_text(
        json.dumps(
            {
                "version": 1,
                "features": [
                    {"latent": 3, "strength": 4.0, "mode": "clamp", "enabled": True},
                    {"latent": 999, "strength": 1.0, "mode": "clamp"},  # the SAE has 64
                    {"latent": 5, "strength": 1.0, "mode": "boost"},
                    {"latent": "x"},
                ],
                "prompt": 42,
                "settings": {"max_new_tokens": 5, "top_p": 7, "bogus": 1},
                "runs": [{"time": "2026-01-01T00:00:00+00:00"}],
            }
        )
    )
    saved, dropped = load_session(path)
    app = PlaygroundApp(
        make_engine(tmp_path), session_path=path, session=saved, session_notes=dropped
    )
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert [(f.latent, f.strength) for f in app.engine.features] == [(3, 4.0)]
        assert app.engine.settings.max_new_tokens == 5 and app.engine.settings.top_p == 1.0
        (said,) = [m for m in notifications(app) if m.startswith("dropped")]
        for what in (
            "feature 999",
            "feature 5",
            "feature x (vector 'x'",  # a name is a saved vector's: none is there
            "prompt",
            "top_p",
            "bogus",
            "run 1",
        ):
            assert what in said, what

    path.write_text('{"version": 1, "features": [{"latent": 3')  # cut short
    saved, dropped = load_session(path)
    assert saved.features == [] and "unreadable" in dropped[0]
    assert (tmp_path / "session.json.damaged").exists()  # kept, not overwritten


async def test_runs_are_recorded_flipped_through_brought_back_and_exported(tmp_path):
    path = tmp_path / "session.json"
    app = PlaygroundApp(make_engine(tmp_path), session_path=path)
    async with app.run_test(size=SIZE) as pilot:
        app.query_one("#prompt").value = PROMPT
        await pilot.press("ctrl+n")  # plain completion: each run stands alone
        await pilot.press("enter")
        await settle(pilot)
        app.add_feature(3)
        app.engine.set_strength(3, 60)
        app.engine.set_mode(3, "add")
        await pilot.pause()
        app.query_one("#prompt").focus()
        await pilot.press("enter")
        await settle(pilot)
        first, second = app.runs
        assert first.interventions == [] and first.baseline == first.steered
        assert second.levers() == "3=60 add" and second.steered != first.steered
        assert second.baseline == first.baseline and second.steered == app.texts[1]
        assert second.settings["seed"] == 0 and not second.chat

        await pilot.press("f7")  # back to the first run
        assert app.run_shown == 1 and app.texts == [second.baseline, second.steered]
        await pilot.press("f7")
        assert app.run_shown == 0 and app.texts[1] == first.steered
        assert "run 1/2" in app.query_one("#baseline").border_subtitle
        await pilot.press("f8")
        assert app.run_shown == 1

        app.engine.clear_features()
        app.refresh_features()
        app.query_one("#prompt").value = ""
        await pilot.press("f6")
        assert isinstance(app.screen, HistoryScreen)
        await pilot.press("r")  # newest first: bring back run 2's levers and prompt
        await pilot.pause()
        assert [f.describe() for f in app.engine.features] == ["3=60 add"]
        assert app.query_one("#prompt").value == PROMPT

        await pilot.press("f6", "e")
        await pilot.pause()
        exports = sorted((state_dir() / "exports").iterdir())
        folder = exports[-1]
        history = json.loads((folder / "history.json").read_text())
        assert [r["steered"] for r in history["runs"]] == [first.steered, second.steered]
        assert "3=60 add" in (folder / "history.md").read_text()
        preset = json.loads((folder / "runs" / "run-002.json").read_text())
        assert preset["prompt"] == PROMPT and preset["interventions"][0]["latent"] == 3
        await pilot.pause(0.6)
    saved, _ = load_session(path)
    assert len(saved.runs) == 2  # the record is in the session too
