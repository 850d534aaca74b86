"""Random keys for the playground: every binding of every screen, navigation and editing
keys, ctrl combinations and printable text, in seeded bursts, with a consistency check
after each burst. Used by test_random_keys.py (short, in CI) and scripts/random_keys.py
(long runs)."""

from __future__ import annotations

import importlib
import inspect
import math
import pkgutil
import random
import string

from textual import events
from textual.binding import Binding
from textual.dom import DOMNode

import steer.tui
from steer.tui.widgets import FeatureRow

NAVIGATION = [
    "pageup", "pagedown", "home", "end", "up", "down", "left", "right",
    "shift+left", "shift+right", "shift+up", "shift+down", "ctrl+left", "ctrl+right",
    "ctrl+home", "ctrl+end", "ctrl+pageup", "ctrl+pagedown",
    "escape", "enter", "tab", "shift+tab", "backspace", "delete", "space",
]  # fmt: skip
FUNCTION_KEYS = [f"f{i}" for i in range(1, 13)]
# ctrl+q quits and ctrl+z suspends the process: leaving is not a crash, so they are left
# out (and the palette's "Quit" is disarmed by `disarm`).
CTRL = [f"ctrl+{c}" for c in string.ascii_lowercase if c not in "qz"]
PRINTABLE = string.ascii_letters + string.digits + " .,-#?!:/'"
LEAVING = {"ctrl+q", "ctrl+z"}


def send_at_once(app, *keys: str) -> None:
    """Queue key events the way a terminal delivers keys typed quickly: no wait between
    them for the app to settle (Pilot's `press` waits, which hides timing bugs)."""
    for key in keys:
        char = key if len(key) == 1 else " " if key == "space" else None
        event = events.Key(key, char)
        event.set_sender(app)
        app._driver.send_message(event)


def _binding_keys(bindings) -> set[str]:
    keys: set[str] = set()
    for binding in bindings or []:
        key = binding.key if isinstance(binding, Binding) else binding[0]
        keys.update(k.strip() for k in key.split(","))
    return keys


def all_binding_keys() -> list[str]:
    """The keys of every binding declared by the playground's screens, widgets and app,
    and by the Textual widgets and screens they are built from."""
    classes: set[type] = set()
    for info in pkgutil.walk_packages(steer.tui.__path__, "steer.tui."):
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, DOMNode):
                classes.update(c for c in cls.__mro__ if isinstance(c, type))
    keys: set[str] = set()
    for cls in classes:
        keys |= _binding_keys(cls.__dict__.get("BINDINGS"))
    return sorted(keys - LEAVING)


class Monkey:
    """Draws keys: a third from the bindings active right now, the rest from every
    binding, navigation, function and ctrl keys and printable characters."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.static = all_binding_keys()

    def active_keys(self, app) -> list[str]:
        try:
            return sorted(set(app.active_bindings) - LEAVING)
        except Exception:  # noqa: BLE001 - a screen in transition: no active bindings
            return []

    def draw(self, app) -> str:
        r = self.rng.random()
        active = self.active_keys(app)
        if r < 0.33 and active:
            return self.rng.choice(active)
        if r < 0.55:
            return self.rng.choice(self.static)
        if r < 0.7:
            return self.rng.choice(NAVIGATION)
        if r < 0.8:
            return self.rng.choice(CTRL + FUNCTION_KEYS)
        return self.rng.choice(PRINTABLE)

    def burst(self, app, n: int) -> list[str]:
        return [self.draw(app) for _ in range(n)]


def disarm(app) -> list[str]:
    """Make leaving a no-op (recorded): quitting from the palette is not a crash."""
    left: list[str] = []
    app.action_quit = lambda: left.append("quit")  # type: ignore[method-assign]
    app.action_suspend_process = lambda: left.append("suspend")  # type: ignore[method-assign]
    return left


def check_consistent(app) -> None:
    """Alive, nothing contained, the feature panel shows exactly the engine's levers."""
    assert app.is_running and app.return_code is None, app.crash_message
    assert not app.contained, app.contained
    main = app.screen_stack[0]
    rows = list(main.query(FeatureRow))
    engine = app.engine
    assert [row.latent for row in rows] == [f.latent for f in engine.features]
    for row, feature in zip(rows, engine.features, strict=True):
        assert math.isfinite(feature.strength), feature
        assert row.slider.value == feature.strength or row.slider.typed is not None
        assert feature.mode in ("clamp", "add", "ablate")
    settings = engine.settings
    assert math.isfinite(settings.temperature) and 0 < settings.top_p <= 1


async def settle_workers(app) -> None:
    """Wait for every worker. A dialog closed before its worker finished cancels it
    (Textual's rule for a screen's workers): that is no failure, but `wait_for_complete`
    raises WorkerCancelled for it, so wait again for the rest."""
    from textual.worker import WorkerCancelled

    for _ in range(20):
        try:
            await app.workers.wait_for_complete()
            return
        except WorkerCancelled:
            continue
    await app.workers.wait_for_complete()


async def run_monkey(app, pilot, seed: int, bursts: int, burst_len: int, log=None) -> int:
    """Send `bursts` bursts of random keys; check the app after each. Returns keys sent.

    Keys go straight to the driver, in chunks with random short gaps (0-50 ms): as fast
    as a terminal delivers them, and at the moments when screens are half built. (Pilot's
    `press` waits ~0.1 s per key for the app to settle: ten times slower, and it hides
    timing bugs such as the palette's.)"""
    monkey = Monkey(seed)
    sent = 0
    for b in range(bursts):
        keys = monkey.burst(app, burst_len)
        i = 0
        while i < len(keys):
            chunk = keys[i : i + monkey.rng.randint(1, 12)]
            send_at_once(app, *chunk)
            await pilot.pause(monkey.rng.choice([0, 0, 0.01, 0.05]))
            i += len(chunk)
        await pilot.pause()
        await settle_workers(app)
        await pilot.pause()
        sent += len(keys)
        if log is not None:
            log(b, keys, app)
        try:
            check_consistent(app)
        except AssertionError as err:
            raise AssertionError(f"seed {seed}, burst {b} ({keys!r}): {err}") from err
    return sent
