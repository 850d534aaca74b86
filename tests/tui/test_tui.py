"""The playground's main flows, driven with Textual's Pilot on the tiny in-process model."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time

import pytest
from builders import PROMPT, make_engine, make_tiny_sae, settle

from steer.app.engine import PlaygroundEngine
from steer.tui.app import PlaygroundApp
from steer.tui.keys import HELP
from steer.tui.screens import (
    FindScreen,
    HelpScreen,
    InspectorScreen,
    LoadingScreen,
    TokenViewScreen,
)
from steer.tui.widgets import FeatureRow, Slider

SIZE = (120, 40)
pytestmark = pytest.mark.anyio  # async tests run on anyio's pytest plugin (asyncio backend)


def tiny_app(tmp_path, catalog: bool = True, **settings) -> PlaygroundApp:
    return PlaygroundApp(make_engine(tmp_path, catalog=catalog, **settings))


async def submit(pilot, prompt: str = PROMPT) -> None:
    pilot.app.query_one("#prompt").value = prompt
    pilot.app.query_one("#prompt").focus()
    await pilot.press("enter")
    await settle(pilot)


def pane(app, which: str) -> str:
    return app.query_one(f"#{which}").text


def notifications(app) -> list[str]:
    return [n.message for n in app._notifications]


# ---------------------------------------------------------------- generate
async def test_generate_streams_baseline_and_steered_side_by_side(tmp_path):
    app = tiny_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        assert app.focused is app.query_one("#prompt")
        await submit(pilot)
        gen = app.engine.last
        assert gen.finished and len(gen.texts) == 2
        assert PROMPT in pane(app, "baseline") and PROMPT in pane(app, "steered")
        assert app.texts == gen.texts  # streamed tokens add up to the completions
        assert app.texts[0] == app.texts[1]  # no active features yet
        assert app.query_one("#baseline").border_subtitle.startswith("done")
        assert app.query_one("#prompt").value == ""  # chat mode: the box clears for the next turn
        assert len(app.engine.history) == 1


async def test_find_add_move_slider_regenerate_changes_the_steered_pane(tmp_path):
    app = tiny_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await submit(pilot)
        before = list(app.texts)

        await pilot.press("ctrl+f")
        assert isinstance(app.screen, FindScreen)
        await pilot.press(*"Golden Gate Bridge", "enter")
        await settle(pilot)
        await pilot.press("down", "enter")  # go to the results, add the top one
        await settle(pilot)
        assert not isinstance(app.screen, FindScreen)
        assert len(app.engine.features) == 1
        latent = app.engine.features[0].latent
        slider = app.query_one(FeatureRow).slider
        assert app.focused is slider  # the new feature is ready for its slider

        await pilot.press("ctrl+e")  # clamp -> add
        await pilot.press(*"60", "enter")  # exact value, in ×max units
        await pilot.press("right", "shift+right")  # fine +0.5, coarse +5
        feature = app.engine.feature(latent)
        assert feature.mode == "add" and feature.strength == pytest.approx(65.5)
        assert slider.value == pytest.approx(65.5)

        await pilot.press("ctrl+r")  # regenerate the same message
        await settle(pilot)
        assert app.texts[0] == before[0]  # the baseline is unmoved
        assert app.texts[1] != before[1]  # the steered completion changed
        assert app.texts[1] in pane(app, "steered").replace("model › ", "")
        assert len(app.engine.history) == 1  # regenerate replaced the turn

        await pilot.press("0")  # reset
        assert app.engine.feature(latent).strength == 0
        await pilot.press("ctrl+d")  # mute
        assert not app.engine.feature(latent).enabled
        assert app.query_one(FeatureRow).has_class("muted")


async def test_slider_typing_can_be_cancelled_and_needs_a_number(tmp_path):
    app = tiny_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        app.add_feature(3)
        await pilot.pause()
        slider = app.query_one(Slider)
        assert app.focused is slider and slider.value == 10
        await pilot.press(*"25", "escape")
        assert slider.value == 10 and slider.typed is None
        await pilot.press("-", "enter")  # "-" alone is not a number
        assert slider.value == 10
        await pilot.press("left")
        assert app.engine.feature(3).strength == 9.5
        await pilot.press("delete")  # remove
        await pilot.pause()
        assert app.engine.features == [] and not app.query(FeatureRow)


async def test_cancel_a_generation_with_escape(tmp_path):
    app = tiny_app(tmp_path, catalog=False, max_new_tokens=200)
    stream = app.engine._stream

    def slow_stream(*args, **kwargs):  # the tiny model is too quick to catch mid-way
        for events in stream(*args, **kwargs):
            time.sleep(0.01)
            yield events

    app.engine._stream = slow_stream
    async with app.run_test(size=SIZE) as pilot:
        app.query_one("#prompt").value = PROMPT
        await pilot.press("enter")
        assert app.generating
        await pilot.press("escape")
        await settle(pilot)
        gen = app.engine.last
        assert gen.cancelled and not gen.finished
        assert len(gen.token_ids[0]) < 200
        assert not app.generating
        assert "cancelled" in app.query_one("#baseline").border_subtitle
        assert app.engine.history == []
        app.engine.update_settings(max_new_tokens=3)
        await submit(pilot, "again")  # the model is free again
        assert app.engine.last.finished


async def test_save_and_load_a_preset(tmp_path):
    app = tiny_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        app.add_feature(3)
        app.add_feature(5)
        await pilot.pause()
        await pilot.press("ctrl+s")
        await pilot.press(*"golden", "enter")
        await pilot.pause()
        path = tmp_path / "presets" / "golden.json"
        data = json.loads(path.read_text())
        assert [iv["latent"] for iv in data["interventions"]] == [3, 5]

        app.engine.clear_features()
        app.refresh_features()
        await pilot.pause()
        assert not app.query(FeatureRow)
        await pilot.press("ctrl+o")
        await pilot.pause()
        await pilot.press("enter")  # the only preset is highlighted
        await pilot.pause()
        assert [f.latent for f in app.engine.features] == [3, 5]
        assert [row.latent for row in app.query(FeatureRow)] == [3, 5]


async def test_help_inspector_and_per_token_view(tmp_path):
    app = tiny_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)

        app.add_feature(3)
        await pilot.pause()
        await pilot.press("enter")
        assert isinstance(app.screen, InspectorScreen)
        await settle(pilot)
        body = str(app.screen.query_one("#inspector-body").render())
        assert "Logit lens" in body and "Top activating contexts" in body
        assert app.engine.label(3) in body
        await pilot.press("escape")

        await pilot.press("ctrl+t")  # nothing generated yet: a notification, no screen
        assert not isinstance(app.screen, TokenViewScreen)
        assert any("generate something first" in m for m in notifications(app))
        await submit(pilot)
        await pilot.press("ctrl+t")
        assert isinstance(app.screen, TokenViewScreen)
        await settle(pilot)
        body = str(app.screen.query_one("#tokens-body").render())
        assert "Prompt" in body and "Baseline" in body and "Steered" in body


async def test_command_palette_adds_a_feature(tmp_path):
    app = tiny_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+p")
        await pilot.press(*"#7")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await pilot.pause()
        assert [f.latent for f in app.engine.features] == [7]


async def test_completion_mode_keeps_the_prompt_and_no_history(tmp_path):
    app = tiny_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+n")
        assert not app.engine.chat_mode
        await submit(pilot, "Once upon a time")
        assert app.query_one("#prompt").value == "Once upon a time"  # ready to edit and rerun
        assert app.engine.history == []
        assert pane(app, "baseline").startswith("Once upon a time")
        await pilot.press("ctrl+n")
        assert app.engine.chat_mode


async def test_auto_regenerate_after_a_slider_move(tmp_path, monkeypatch):
    import steer.tui.app as tui_app

    monkeypatch.setattr(tui_app, "AUTO_REGENERATE_DELAY", 0.05)
    app = PlaygroundApp(make_engine(tmp_path), auto_regenerate=True)
    async with app.run_test(size=SIZE) as pilot:
        await submit(pilot)
        first = app.gen_id
        app.add_feature(3)
        await pilot.pause()
        await pilot.press("shift+right")
        await pilot.pause(0.3)
        await settle(pilot)
        assert app.gen_id == first + 1 and app.engine.last.finished
        assert len(app.engine.history) == 1  # the regenerated turn replaced the first


async def test_palette_offers_the_playground_actions(tmp_path):
    app = tiny_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+p")
        await pilot.press(*"find features")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, FindScreen)


async def test_settings_screen_applies_and_rejects(tmp_path):
    app = tiny_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+g")
        field = app.screen.query_one("#max_new_tokens")
        field.value = "9"
        app.screen.query_one("#temperature").value = "0.8"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.engine.settings.max_new_tokens == 9 and app.engine.settings.temperature == 0.8
        await pilot.press("ctrl+g")
        app.screen.query_one("#top_p").value = "7"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.engine.settings.top_p == 1.0
        assert any("top_p" in m or "top-p" in m for m in notifications(app))


# ---------------------------------------------------------------- errors never crash the app
async def test_generation_errors_become_notifications(tmp_path):
    app = tiny_app(tmp_path, catalog=False, max_new_tokens=250)  # prompt + 250 > the 256 context
    async with app.run_test(size=SIZE) as pilot:
        await submit(pilot)
        assert app.is_running and not app.generating
        assert any("context" in m for m in notifications(app))
        app.open_sae(str(tmp_path / "no-such-sae"))
        await settle(pilot)
        assert any("no SAE checkpoint" in m for m in notifications(app))


async def test_loading_screen_then_playground(tmp_path, tiny_model_dir):
    sae_dir = tmp_path / "sae"
    make_tiny_sae().save(sae_dir)
    app = PlaygroundApp(
        PlaygroundEngine(presets_dir=tmp_path), model=str(tiny_model_dir), sae_path=sae_dir
    )
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert not isinstance(app.screen, LoadingScreen)
        assert app.engine.has_sae
        assert any("no feature catalog" in m for m in notifications(app))
        assert "resid_post.1" in str(app.query_one("#status").render())


async def test_an_sae_that_does_not_fit_leaves_a_baseline_playground(tmp_path, tiny_model_dir):
    from sae import SAEConfig, TopKSAE

    TopKSAE(SAEConfig(d_in=16, n_latents=32, k=4, hookpoint="resid_post.1")).save(tmp_path / "bad")
    app = PlaygroundApp(PlaygroundEngine(), model=str(tiny_model_dir), sae_path=tmp_path / "bad")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert not isinstance(app.screen, LoadingScreen) and not app.engine.has_sae
        assert any("d_in=16" in m for m in notifications(app))
        assert "No SAE loaded" in str(app.query_one("#features .empty").render())


async def test_a_model_that_cannot_load_stays_on_the_loading_screen(tmp_path):
    app = PlaygroundApp(PlaygroundEngine(), model=str(tmp_path / "missing-model"))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert isinstance(app.screen, LoadingScreen) and app.is_running
        assert "could not load" in str(app.screen.query_one("#loading-what").render())


async def test_no_sae_means_baseline_only(tmp_path):
    engine = make_engine(tmp_path, catalog=False)
    engine.sae = None
    app = PlaygroundApp(engine)
    async with app.run_test(size=(80, 24)) as pilot:
        await submit(pilot)
        assert len(app.engine.last.texts) == 1
        assert "baseline only" in pane(app, "steered")
        await pilot.press("ctrl+f")
        assert not isinstance(app.screen, FindScreen)


# ---------------------------------------------------------------- keys and startup
def test_every_app_key_is_in_the_help_screen():
    documented = " ".join(keys for _, rows in HELP for keys, _ in rows)
    names = {"question_mark": "?", "escape": "escape"}
    for binding in PlaygroundApp.BINDINGS:
        for key in binding.key.split(","):
            assert names.get(key, key) in documented, key
    shown = [b for b in PlaygroundApp.BINDINGS if b.show]
    assert len(shown) + 1 <= 6  # + the command palette: the footer stays short


def test_chat_command_module_does_not_import_torch_or_textual():
    code = (
        "import sys, steer.cli.chat\n"
        "bad = [m for m in ('torch', 'textual', 'transformers') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_chat_command_opens_the_default_model_and_sae(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from steer.cli.main import app as cli

    seen = {}
    monkeypatch.setattr("steer.app.engine.find_default_sae", lambda: tmp_path)
    monkeypatch.setattr(
        PlaygroundApp, "run", lambda self: seen.update(model=self.model_arg, sae=self.sae_arg)
    )
    result = CliRunner().invoke(cli, ["chat"])
    assert result.exit_code == 0, result.output
    assert seen == {"model": "smollm2-135m", "sae": tmp_path}
    # Another model: no default SAE (it was trained on the embedded model).
    result = CliRunner().invoke(cli, ["chat", "--model", "gpt2"])
    assert seen == {"model": "gpt2", "sae": None}
    result = CliRunner().invoke(cli, ["chat", "--sae", str(tmp_path / "nope")])
    assert result.exit_code == 1 and "no SAE checkpoint folder" in result.output


async def test_palette_opens_a_shipped_checkpoint(tmp_path, monkeypatch):
    app = tiny_app(tmp_path)
    opened = []
    monkeypatch.setattr(app, "open_sae", lambda path: opened.append(path))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+p")
        await pilot.press(*"open sae 4608")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await pilot.pause()
    assert opened and opened[0].endswith("4608-k32")


# ---------------------------------------------------------------- explanations
async def test_explanations_show_in_find_inspector_panel_and_palette(tmp_path):
    from builders import tiny_catalog

    from steer.features.catalog import FeatureCatalog
    from steer.features.explain.store import Explanations, LMExplanation
    from steer.tui.screens.inspector import render_feature

    base = tiny_catalog()
    catalog = FeatureCatalog(base.tensors, list(base.labels), base.pieces, dict(base.meta))
    ex = Explanations()
    ex.add_lm(7, LMExplanation("tester", "zebra crossings", 0.9, 10))
    catalog.set_explanations(ex)
    engine = make_engine(tmp_path)
    engine.catalog = catalog
    app = PlaygroundApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+f")
        await pilot.press(*"zebra", "enter")
        await settle(pilot)
        results = app.screen.query_one("#find-results")
        shown = [str(results.get_option_at_index(i).prompt) for i in range(results.option_count)]
        hit = next(s for s in shown if "#7 " in s)
        assert "zebra crossings (tester · detection 0.90)" in hit  # found by its explanation
        await pilot.press("escape")
        app.add_feature(7)
        await settle(pilot)
        row = app.query_one(FeatureRow)
        assert row.latent == 7 and "zebra crossings" in row.label and row.label.endswith("det .90")
    info = engine.inspect(7)
    text = str(render_feature(info, engine.strength_unit))
    assert "explained  zebra crossings  (tester · detection 0.90)" in text
    assert engine.search("zebra", limit=3)[0].explanation.startswith("zebra crossings")


async def test_typing_after_adding_a_feature_goes_to_the_prompt(tmp_path):
    """Focus stays on the new feature's slider; a sentence typed then (letters, spaces, an
    `m` and an `x` among them) goes to the prompt and leaves the features as they were.
    A removed feature comes back with ctrl+z; the line above the footer says where
    typing goes."""
    app = tiny_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+f")
        await pilot.press(*"Golden Gate Bridge", "enter")
        await settle(pilot)
        await pilot.press("down", "enter")  # add the top result; its slider has focus
        await settle(pilot)
        assert isinstance(app.focused, Slider)
        latent = app.engine.features[0].latent
        before = [dataclasses.asdict(f) for f in app.engine.features]
        assert "typing → the prompt" in str(app.query_one("#typing").render())

        sentence = "make my mixed text, exactly as typed"
        await pilot.press(*sentence)
        assert app.query_one("#prompt").value == sentence
        assert app.focused is app.query_one("#prompt")
        assert [dataclasses.asdict(f) for f in app.engine.features] == before

        app.focus_feature(latent)
        await pilot.press("ctrl+d", "delete")  # mute, then remove
        await pilot.pause()
        assert app.engine.features == []
        await pilot.press("ctrl+z")  # undo: back where it was, muted as it was
        await pilot.pause()
        (back,) = app.engine.features
        assert back.latent == latent and not back.enabled
        assert len(app.query(FeatureRow)) == 1
        await pilot.press("ctrl+z")  # nothing left to undo: a notice, no crash
        assert any("no removed feature" in m for m in notifications(app))
