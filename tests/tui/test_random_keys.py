"""Thousands of seeded random keys on the tiny model: the playground stays alive and
consistent after every burst (scripts/random_keys.py runs longer)."""

from __future__ import annotations

import pytest
from builders import make_engine
from monkey import all_binding_keys, disarm, run_monkey

from steer.app.session import load_session
from steer.tui.app import PlaygroundApp

pytestmark = pytest.mark.anyio


def test_the_key_pool_covers_every_screen():
    keys = set(all_binding_keys())
    # the app's, the find dialog's, the slider's, the palette's and Textual's Input's keys
    assert {"ctrl+f", "f6", "f7", "a", "ctrl+e", "ctrl+d", "delete", "pagedown", "ctrl+k"} <= keys
    assert "ctrl+q" not in keys


async def test_random_keys_leave_the_app_alive_and_consistent(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a typed preset name may be a relative path
    session = tmp_path / "session.json"
    app = PlaygroundApp(make_engine(tmp_path), session_path=session)
    app.errors_log = tmp_path / "errors.log"
    left = disarm(app)
    async with app.run_test(size=(120, 40)) as pilot:
        sent = await run_monkey(app, pilot, seed=0, bursts=40, burst_len=50)
        assert sent == 2000
        app.autosave()
        saved, dropped = load_session(session)
        assert dropped == []
        assert [f["latent"] for f in saved.features] == [f.latent for f in app.engine.features]
        assert len(saved.runs) == len(app.runs)
    assert not (tmp_path / "errors.log").exists()
    print(f"2000 keys; {len(app.runs)} runs; left {len(left)} times (disarmed)")
