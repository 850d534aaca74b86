"""The circuit of a token in the playground: from the why screen, `c` shows the tree through
the loaded SAE and its sibling depth; a latent of either depth becomes a lever."""

from __future__ import annotations

import functools

import pytest
from builders import PROMPT, make_engine, tiny_catalog
from builders import settle as builders_settle

from steer.tui.app import PlaygroundApp
from steer.tui.screens import CircuitScreen, WhyScreen

pytestmark = pytest.mark.anyio


@pytest.fixture
def family(tmp_path):
    """<root>/resid_post.1/64-k4 (the engine's SAE, with its catalog) and resid_post.2."""
    from builders import make_tiny_sae

    root = tmp_path / "family"
    make_tiny_sae().save(root / "resid_post.1" / "64-k4")
    tiny_catalog().save(root / "resid_post.1" / "64-k4")
    deeper = make_tiny_sae(seed=1)
    deeper.cfg.hookpoint = "resid_post.2"
    deeper.save(root / "resid_post.2" / "64-k4")
    return root


settle = functools.partial(builders_settle, rounds=2)  # a worker's result starts another


def tree_lines(screen) -> list[str]:
    from textual.widgets import Tree

    tree = screen.query_one("#circuit-tree", Tree)
    out, stack = [], [tree.root]
    while stack:
        node = stack.pop()
        out.append(str(node.label))
        stack.extend(reversed(node.children))
    return out


async def open_circuit(pilot, app):
    app.query_one("#prompt").value = PROMPT
    app.query_one("#prompt").focus()
    await pilot.press("enter")
    await settle(pilot)
    await pilot.press("ctrl+y")
    await settle(pilot)
    assert isinstance(app.screen, WhyScreen)
    await pilot.press("c")
    await settle(pilot)
    screen = app.screen
    assert isinstance(screen, CircuitScreen) and screen.view is not None
    return screen


async def test_c_opens_the_tree_through_both_depths_and_a_deeper_latent_becomes_a_lever(
    tmp_path, family
):
    engine = make_engine(tmp_path)
    engine.load_sae(family / "resid_post.1" / "64-k4")
    app = PlaygroundApp(engine)
    async with app.run_test(size=(140, 44)) as pilot:
        screen = await open_circuit(pilot, app)
        view = screen.view
        assert view.circuit.layers == [1, 2] and view.loaded_layer == 1
        assert (view.row, view.index) == (1, len(engine.last.token_ids[1]) - 1)
        lines = tree_lines(screen)
        assert lines[0].startswith(f"logit({view.token!r})")
        assert any(" L2 #" in line for line in lines) and any(" L1 #" in line for line in lines)
        assert any("token " in line for line in lines)
        # Labels of the loaded depth come from its catalog.
        labelled = [n for n in view.circuit.nodes if n.kind == "latent" and n.layer == 1]
        assert labelled and any(n.label and n.label in "\n".join(lines) for n in labelled)
        # A token is no lever: a notice, the screen stays.
        tree = screen.query_one("#circuit-tree")
        token_line = next(i for i, t in enumerate(lines) if "token " in t)
        tree.move_cursor_to_line(token_line)
        await pilot.press("l")
        assert app.screen is screen
        # A latent of depth 2: `a` switches the playground to that SAE, ablates, regenerates.
        line = next(i for i, t in enumerate(lines) if " L2 #" in t)
        tree.move_cursor_to_line(line)
        node = tree.cursor_node.data
        assert node.kind == "latent" and node.layer == 2
        gen_id = app.gen_id
        await pilot.press("a")
        await settle(pilot)
        assert not isinstance(app.screen, (CircuitScreen, WhyScreen))
        assert engine.sae.cfg.hookpoint == "resid_post.2"
        lever = engine.feature(node.feature)
        assert lever is not None and lever.mode == "ablate" and lever.enabled
        assert app.gen_id == gen_id + 1 and engine.last.finished
        assert any(iv.latent == node.feature for iv in engine.last.levers)


async def test_l_adds_a_latent_of_the_loaded_depth_to_the_panel(tmp_path, family):
    engine = make_engine(tmp_path)
    engine.load_sae(family / "resid_post.1" / "64-k4")
    app = PlaygroundApp(engine)
    async with app.run_test(size=(140, 44)) as pilot:
        screen = await open_circuit(pilot, app)
        lines = tree_lines(screen)
        tree = screen.query_one("#circuit-tree")
        tree.move_cursor_to_line(next(i for i, t in enumerate(lines) if " L1 #" in t))
        node = tree.cursor_node.data
        gen = engine.last
        await pilot.press("l")
        await settle(pilot)
        assert engine.sae.cfg.hookpoint == "resid_post.1"  # no switch
        lever = engine.feature(node.feature)
        assert lever is not None and lever.mode != "ablate"
        assert engine.last is gen  # added, not regenerated


async def test_one_depth_alone_still_draws_a_circuit(tmp_path):
    """An SAE that is not on disk (no siblings): the circuit through its one depth."""
    engine = make_engine(tmp_path)
    app = PlaygroundApp(engine)
    async with app.run_test(size=(140, 44)) as pilot:
        screen = await open_circuit(pilot, app)
        assert screen.view.circuit.layers == [1]
        assert any("L1 SAE error" in t for t in tree_lines(screen))
