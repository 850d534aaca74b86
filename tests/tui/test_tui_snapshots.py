"""Snapshot tests of the playground's main screens (pytest-textual-snapshot).

They run on `FakeEngine`: a PlaygroundEngine whose model parts are replaced by fixed,
deterministic text, so the pictures never drift with torch versions or random weights.
Update the pictures with `pytest tests/test_tui_snapshots.py --snapshot-update` and look
at them (the report pytest prints) before committing.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from types import SimpleNamespace

import pytest

from steer.app.engine import Context, FeatureHit, FeatureInfo, PlaygroundEngine
from steer.steering.generate import GenerationSettings, TokenEvent

pytest.importorskip("pytest_textual_snapshot")

FEATURES = {
    123: "Bridge/bridge → Gate, Francisco",
    77: "dog/dogs → puppy, bark",
    2048: "Paris/France → Eiffel, French",
    9: "the/a → of, and",
    512: "music/song → melody, sing",
}
BASELINE = " The bridge was opened in 1937 and is painted a colour called international orange."
STEERED = (
    " The Golden Gate Bridge, the Golden Gate Bridge! I am the bridge, red and tall over the bay."
)


class FakeEngine(PlaygroundEngine):
    """Deterministic stand-in for the model: whole words are tokens, texts are fixed."""

    def __init__(self, loaded: bool = True, presets_dir: Path | None = None, delay: float = 0.0):
        super().__init__(settings=GenerationSettings(max_new_tokens=32), presets_dir=presets_dir)
        self.vocab: list[str] = []
        self.delay = delay  # seconds per token (to test cancel / streaming)
        if loaded:
            self._attach()

    def _attach(self) -> None:
        self.lm = SimpleNamespace(
            name="smollm2-135m", is_chat=True, n_layers=30, d_model=576, device="cpu"
        )
        self.sae = SimpleNamespace(
            n_latents=4096, k=32, arch="topk", cfg=SimpleNamespace(hookpoint="resid_post.8")
        )
        self.sae_path = Path("checkpoints/smollm2-135m/demo/resid_post.8")
        self.catalog = SimpleNamespace(max_acts=[10.0] * 4096)

    def load(self, model=None, sae_path=None, progress=None):
        progress(0.4, f"loading model {model}")
        self._attach()
        progress(1.0, "ready")

    # model-free replacements
    def inference_context(self):
        return contextlib.nullcontext()

    def label(self, latent: int) -> str:
        return FEATURES.get(latent, f"feature {latent}")

    def find_by_text(self, text: str, n: int = 20) -> list[FeatureHit]:
        return [FeatureHit(k, 1.5 - 0.2 * i, v) for i, (k, v) in enumerate(FEATURES.items())][:n]

    def search(self, query: str, limit: int = 20) -> list[FeatureHit]:
        if query.strip().lstrip("#").isdigit():
            return [
                FeatureHit(
                    int(query.strip().lstrip("#")), None, self.label(int(query.strip().lstrip("#")))
                )
            ]
        return [FeatureHit(k, None, v) for k, v in FEATURES.items() if query.lower() in v.lower()][
            :limit
        ]

    def inspect(self, latent: int) -> FeatureInfo:
        words = " The Golden Gate Bridge is a suspension bridge in San Francisco".split(" ")[1:]
        tokens = [" " + w for w in words]
        contexts = [
            Context(tokens, [0.0, 2.0, 6.5, 9.8, 0.5, 0.0, 1.0, 7.0, 0.0, 0.0, 0.0], 3),
            Context([" a", " bridge", " over", " the", " river"], [0.0, 8.1, 0.4, 0.0, 0.0], 1),
        ]
        return FeatureInfo(
            latent,
            self.label(latent),
            0.0123,
            3.4,
            9.8,
            [" Bridge", " bridge", " Gate", " span"],
            [" dog", " cat", " the"],
            contexts,
        )

    def token_text(self, token_id: int) -> str:
        return self.vocab[token_id]

    def _tokens(self, text: str) -> list[int]:
        ids = []
        for i, word in enumerate(text.split(" ")):
            piece = word if i == 0 else " " + word
            if piece not in self.vocab:
                self.vocab.append(piece)
            ids.append(self.vocab.index(piece))
        return ids

    def _prompt_ids(self, source, chat):
        text = source if isinstance(source, str) else " ".join(m["content"] for m in source)
        return self._tokens(text)

    def _stream(self, prompt_ids, rows, settings, cancel):
        import time

        texts = [BASELINE] + [STEERED if row else BASELINE for row in rows[1:]]
        token_rows = [self._tokens(t.lstrip())[: settings.max_new_tokens] for t in texts]
        steps = max(len(t) for t in token_rows)
        for step in range(steps):
            events = []
            for r, ids in enumerate(token_rows):
                if step < len(ids):
                    piece = self.vocab[ids[step]]
                    events.append(TokenEvent(r, step, ids[step], piece, step == len(ids) - 1))
            yield events
            if cancel is not None and cancel():
                return
            if self.delay:
                time.sleep(self.delay)

    def _is_stop(self, event) -> bool:
        return False

    def coherence(self):
        return None  # the meter needs a model: its own tests use the tiny one

    def _feature_acts(self, token_ids, latent):
        return [float((i * 7 + latent) % 10) for i in range(len(token_ids))]


def make_app(engine: FakeEngine | None = None, features: bool = True):
    from steer.tui.app import PlaygroundApp

    engine = engine or FakeEngine()
    if features:
        engine.add_feature(123, strength=10, mode="clamp")
        engine.add_feature(77, strength=-4, mode="add")
        engine.add_feature(2048, mode="ablate")
        engine.toggle(2048)
    return PlaygroundApp(engine)


async def generate(pilot, prompt: str = "Tell me about the Golden Gate Bridge.") -> None:
    box = pilot.app.query_one("#prompt")
    box.cursor_blink = False  # a blinking cursor makes the picture depend on how long the run took
    box.value = prompt
    await pilot.press("enter")
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def test_main_screen_after_generation(snap_compare):
    async def run_before(pilot):
        await generate(pilot)
        pilot.app.focus_feature(123)
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=(120, 40), run_before=run_before)


def test_main_screen_small_terminal(snap_compare):
    async def run_before(pilot):
        await generate(pilot)

    assert snap_compare(make_app(), terminal_size=(80, 24), run_before=run_before)


def test_empty_start(snap_compare):
    assert snap_compare(make_app(features=False), terminal_size=(100, 30))


def test_help_screen(snap_compare):
    assert snap_compare(make_app(), terminal_size=(120, 40), press=["f1"])


def test_find_screen_with_results(snap_compare):
    async def run_before(pilot):
        await pilot.press("ctrl+f")
        await pilot.press(*"bridge")
        await pilot.press("enter")
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=(120, 40), run_before=run_before)


def test_inspector(snap_compare):
    async def run_before(pilot):
        pilot.app.focus_feature(123)
        await pilot.press("enter")
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=(120, 40), run_before=run_before)


def test_token_view(snap_compare):
    async def run_before(pilot):
        await generate(pilot)
        pilot.app.focus_feature(123)
        await pilot.press("ctrl+t")
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=(120, 40), run_before=run_before)


async def steady_cursors(pilot) -> None:
    """Stop every input's cursor from blinking: otherwise the picture depends on how long
    the run took (the settings fields failed this way under load)."""
    from textual.widgets import Input

    for box in pilot.app.screen.query(Input):
        box.cursor_blink = False
    await pilot.pause()


def test_settings_screen(snap_compare):
    async def run_before(pilot):
        await pilot.press("ctrl+g")
        await pilot.pause()
        await steady_cursors(pilot)

    assert snap_compare(make_app(), terminal_size=(100, 30), run_before=run_before)


def test_presets_screen(snap_compare, tmp_path):
    engine = FakeEngine(presets_dir=tmp_path)
    (tmp_path / "golden-gate.json").write_text("{}")
    (tmp_path / "dogs.json").write_text("{}")
    app = make_app(engine)
    engine.presets_dir = Path("/home/me/.cache/steer/presets")  # a stable path in the picture
    engine.list_presets = lambda: sorted(tmp_path.glob("*.json"))
    assert snap_compare(app, terminal_size=(100, 30), press=["ctrl+o"])


def test_loading_screen(snap_compare):
    """The loading screen as it looks mid-way (the load flow itself is tested in test_tui)."""
    from steer.tui.screens import LoadingScreen

    async def run_before(pilot):
        screen = LoadingScreen("smollm2-135m + SAE resid_post.8")
        await pilot.app.push_screen(screen)
        screen.set_progress(0.4, "loading model smollm2-135m")
        await pilot.pause()

    assert snap_compare(make_app(features=False), terminal_size=(80, 24), run_before=run_before)
