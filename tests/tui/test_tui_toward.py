"""The playground's "steer toward…" flow and coherence meter, driven with Textual's Pilot."""

from __future__ import annotations

import pytest
from builders import make_engine, settle

from steer.steering.coherence import Coherence
from steer.tui.app import PlaygroundApp
from steer.tui.screens import FindScreen

SIZE = (120, 40)
pytestmark = pytest.mark.anyio


async def send_prompt(pilot, prompt: str = "The Golden Gate") -> None:
    """Type a prompt and press enter; wait for the generation, then for the meter that
    runs after it."""
    pilot.app.query_one("#prompt").value = prompt
    pilot.app.query_one("#prompt").focus()
    await pilot.press("enter")
    await settle(pilot)
    await settle(pilot)


async def ask_toward(pilot, concept: str = "Bridge") -> None:
    """In the open "Steer toward…" dialog: type the concept, enter, wait for its levers."""
    assert pilot.app.screen.query_one("#find-box").border_title == "Steer toward…"
    await pilot.press(*concept, "enter")
    await settle(pilot)


async def test_steer_toward_adds_the_recommended_lever_and_the_meter_reads_it(tmp_path):
    engine = make_engine(tmp_path)
    expected = engine.toward("Bridge")[0]  # deterministic: the dialog must show the same
    app = PlaygroundApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+f")
        assert isinstance(app.screen, FindScreen)
        await pilot.press("ctrl+t")  # find -> steer toward…
        await ask_toward(pilot, "Bridge")
        await pilot.press("down", "enter")  # the top lever, added and the dialog closed
        await settle(pilot)
        assert not isinstance(app.screen, FindScreen)
        (feature,) = app.engine.features
        assert feature.latent == expected.latent
        assert feature.mode == expected.mode == "add"
        assert feature.strength == pytest.approx(expected.strength)

        await send_prompt(pilot)
        meter = app.engine.coherence()
        assert meter is not None
        subtitle = app.query_one("#steered").border_subtitle
        assert f"{meter.steered:.1f} nats/tok" in subtitle
        assert ("coherent" if meter.ok else "gibberish") in subtitle


async def test_meter_stays_silent_without_levers(tmp_path):
    app = PlaygroundApp(make_engine(tmp_path))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await send_prompt(pilot)
        assert app.engine.coherence() is None
        assert "nats/tok" not in app.query_one("#steered").border_subtitle


async def test_one_key_adds_the_whole_set_and_regenerates_the_last_prompt(tmp_path):
    engine = make_engine(tmp_path)
    expected = engine.toward("Bridge")
    assert len(expected) > 1  # a set, so "adds them all" is tested
    app = PlaygroundApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await send_prompt(pilot)
        assert app.engine.coherence() is None  # no lever yet: nothing to measure
        first = app.gen_id
        app.action_steer_toward()  # the palette's "Steer toward…"
        await pilot.pause()
        await ask_toward(pilot, "Bridge")
        await pilot.press("down", "ctrl+r")
        await settle(pilot)
        await settle(pilot)
        assert not isinstance(app.screen, FindScreen)
        assert [(f.latent, f.mode) for f in app.engine.features] == [
            (lv.latent, lv.mode) for lv in expected
        ]
        strengths = [f.strength for f in app.engine.features]
        assert strengths == pytest.approx([lv.strength for lv in expected])
        assert app.gen_id > first  # regenerated, with the lever
        assert app.engine.last.levers
        assert "nats/tok" in app.query_one("#steered").border_subtitle


async def test_meter_flags_a_reply_pushed_into_gibberish(tmp_path):
    # The meter's numbers are tested in tests/steering (a random tiny model's replies
    # loop at any strength); here: what the user sees when the verdict is "incoherent".
    engine = make_engine(tmp_path)
    engine.add_feature(engine.toward("Bridge")[0].latent, 50.0, mode="add")
    engine.coherence = lambda: Coherence(steered=9.5, baseline=1.1)
    app = PlaygroundApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await send_prompt(pilot)
        assert (
            "⚠ gibberish 9.5 nats/tok (unsteered 1.1)" in app.query_one("#steered").border_subtitle
        )
        warnings = [n.message for n in app._notifications if n.severity == "warning"]
        assert any("lower the strength" in m for m in warnings), warnings
