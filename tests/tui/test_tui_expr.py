"""The playground's expression line, and one expression giving one greedy text through the
CLI, a preset, the Python API and the playground."""

from __future__ import annotations

import json

import pytest
from builders import invoke, make_engine, settle

import steer.api
from steer.app.engine import PlaygroundEngine
from steer.tui.app import PlaygroundApp

SIZE = (120, 40)
PROMPT = "The Golden Gate"
EXPR = "40 #0:add @generated + 3 #5 @when:#0>0.5"
pytestmark = pytest.mark.anyio


async def type_expression(pilot, text: str) -> None:
    line = pilot.app.query_one("#steer-expr")
    line.focus()
    await pilot.pause()
    line.value = ""
    await pilot.press(*text)  # typed key by key, as a user would
    await pilot.press("enter")
    await settle(pilot)


async def test_the_expression_line_and_the_feature_panel_round_trip(tmp_path):
    app = PlaygroundApp(make_engine(tmp_path))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        engine, line = app.engine, app.query_one("#steer-expr")
        assert line.value == ""
        engine.add_feature(3, 2.5)
        engine.add_feature(7, mode="ablate")
        app.refresh_features()
        await pilot.pause()
        assert line.value == "2.5 #3 + #7:ablate"  # the panel, as an expression
        await type_expression(pilot, "1.5 #4:add @first:2 + ~2 #9 @when:#4>0.1")
        assert [(f.latent, f.strength, f.mode, f.enabled) for f in engine.features] == [
            (4, 1.5, "add", True),
            (9, 2.0, "clamp", False),
        ]
        assert engine.features[0].where == "first:2" and engine.features[1].gate.source == 4
        assert line.value == "1.5 #4:add @first:2 + ~2 #9 @when:#4>0.1"
        assert app.focused is app.query_one("#prompt")  # back to the prompt
        # The panel's keys change the line: ctrl+d mutes the first feature.
        app.focus_feature(4)
        await pilot.pause()
        await pilot.press("ctrl+d")
        await pilot.pause()
        assert line.value.startswith("~1.5 #4:add")
        # A bad expression changes nothing and says where it is wrong.
        before = engine.expression
        await type_expression(pilot, "2 #4 + #")
        assert engine.expression == before
        (said,) = [n.message for n in app._notifications if "column" in n.message]
        assert said.startswith("steering expression, column 8: ")
        app._notifications.clear()


async def test_one_expression_one_greedy_text_everywhere(sae_dir, tiny_model_dir, tmp_path):
    """CLI (--steer), a preset, the Python API and the playground: the same steered text,
    for an expression with positions, a gate and a saved vector."""
    from safetensors.torch import save_file

    from sae import load_sae
    from steer.steering.vectors import vector_path

    path = vector_path(sae_dir, "bridge")  # feature 0's direction, saved as a vector
    path.parent.mkdir(exist_ok=True)
    save_file({"direction": load_sae(sae_dir).decoder_directions([0])[0].contiguous()}, path)
    EXPR = "40 #0:add @generated + 3 #5 @when:#0>0.5 + 20 v:bridge @first:3"
    preset = tmp_path / "p.json"
    args = ["generate", "--sae", sae_dir, "-p", PROMPT, "--max-tokens", 8, "--json"]
    cli = json.loads(invoke(*args, "--steer", EXPR, "--save-preset", preset).stdout)
    assert cli["steered"]["text"] != cli["baseline"]["text"]
    replay = json.loads(invoke(*args, "--preset", preset).stdout)
    api = steer.api.load(sae=sae_dir).compare(PROMPT, EXPR, 8)

    engine = PlaygroundEngine(device="cpu")
    engine.load(str(tiny_model_dir), sae_dir)
    engine.update_settings(max_new_tokens=8)
    app = PlaygroundApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await type_expression(pilot, EXPR)
        assert engine.expression == EXPR
        assert (
            "v:bridge saved vector"
            in app.query_one("#features").query("FeatureRow").last().header().plain
        )
        app.query_one("#prompt").value = PROMPT
        app.query_one("#prompt").focus()
        await pilot.press("enter")
        await settle(pilot)
        played = engine.last.texts
    texts = (cli["steered"]["text"], replay["steered"]["text"], api[1], played[1])
    assert len(set(texts)) == 1, texts
    assert (cli["baseline"]["text"], api[0]) == (played[0], played[0])
