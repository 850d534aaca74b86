"""The feature web in the playground (ctrl+b): a Textual Tree from broad to fine, search
jumps into it, a node becomes a lever or opens the inspector. Driven with Pilot."""

from __future__ import annotations

import pytest
import torch
from builders import make_engine, make_tiny_sae
from textual.widgets import Tree

from sae import SAEConfig, TopKSAE
from steer.features.web import build_web, family_levels
from steer.tui.app import PlaygroundApp
from steer.tui.screens import InspectorScreen, WebScreen

pytestmark = pytest.mark.anyio


def family_with_web(root):
    """The engine's SAE (64 latents) and a narrow sibling made of its first 16 decoder rows:
    wide latent i < 16 splits from narrow latent i (cosine 1)."""
    wide = make_tiny_sae()
    narrow = TopKSAE(SAEConfig(32, 16, 4, hookpoint=wide.cfg.hookpoint))
    with torch.no_grad():
        for name in ("W_dec", "W_enc", "b_enc"):
            getattr(narrow, name).copy_(getattr(wide, name)[:16])
    wide.save(root / "64-k4")
    narrow.save(root / "16-k4")
    levels = family_levels(root / "64-k4")
    web = build_web(levels, [narrow, wide], torch.randn(2000, 32).split(500))
    web.labels[0][3] = "broad bridges"
    web.labels[1][3] = "Golden Gate"
    web.save(root / "64-k4")
    return wide


async def test_walk_the_web_search_add_and_inspect(tmp_path):
    engine = make_engine(tmp_path)
    engine.sae = family_with_web(tmp_path)
    engine.sae_path = tmp_path / "64-k4"
    app = PlaygroundApp(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("ctrl+b")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, WebScreen)
        tree = screen.query_one("#web-tree", Tree)
        roots = [node.data for node in tree.root.children]
        assert roots[:16] and {r for r in roots if r[0] == 0} == {(0, i) for i in range(16)}

        # search by label: the narrow feature (another SAE's) is found but is no lever
        screen.query_one("#web-find").value = "broad"
        screen.query_one("#web-find").focus()
        await pilot.press("enter")
        await pilot.pause()
        assert tree.cursor_node.data == (0, 3)
        await pilot.press("a")
        assert engine.feature(3) is None  # not the loaded SAE's latent
        # its child is: the tree opened the branch, the cursor goes down to it
        await pilot.press("space", "down")
        await pilot.pause()
        assert tree.cursor_node.data == (1, 3) and "Golden Gate" in str(tree.cursor_node.label)
        await pilot.press("a")
        await pilot.pause()
        assert engine.feature(3) is not None  # a lever now

        # #id jumps to the loaded SAE's latent; i opens the inspector on it
        screen.query_one("#web-find").value = "#40"
        screen.query_one("#web-find").focus()
        await pilot.press("enter")
        await pilot.pause()
        assert tree.cursor_node.data == (1, 40)
        await pilot.press("i")
        await pilot.pause()
        assert isinstance(app.screen, InspectorScreen) and app.screen.latent == 40


async def test_without_a_web_the_key_says_how_to_build_one(tmp_path):
    engine = make_engine(tmp_path)
    engine.sae_path = tmp_path / "nowhere"
    app = PlaygroundApp(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("ctrl+b")
        await pilot.pause()
        assert not isinstance(app.screen, WebScreen)
        assert any("steer web --sae" in n.message for n in app._notifications)
