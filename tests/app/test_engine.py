"""PlaygroundEngine, the playground's view-model, on a tiny in-process model (no Textual)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from builders import ENGINE_LAYER, PROMPT, make_engine, make_tiny_sae, tiny_catalog
from conftest import make_tiny_lm

from sae import SAEConfig, TopKSAE
from steer.app.checkpoints import checkpoint_roots
from steer.app.engine import PlaygroundEngine, find_default_sae, list_checkpoints
from steer.app.query import feature_number

LAYER = ENGINE_LAYER


def run(engine: PlaygroundEngine, prompt: str = PROMPT, cancel=None):
    steps = list(engine.generate(prompt, cancel=cancel))
    return steps, engine.last


# ---------------------------------------------------------------- finding checkpoints
def _sae_folder(path):
    make_tiny_sae().save(path)
    return path


def test_default_sae_is_the_marked_folder_else_the_first_run(tmp_path):
    root = tmp_path / "checkpoints"
    assert find_default_sae([root]) is None
    first = _sae_folder(root / "smollm2-135m" / "a-run" / "resid_post.8")
    assert find_default_sae([root]) == first
    marked = _sae_folder(root / "smollm2-135m" / "b-run" / "resid_post.16")
    (marked / "DEFAULT").write_text("")
    assert find_default_sae([root]) == marked
    # A marker one level up that names its SAE folder.
    (marked / "DEFAULT").unlink()
    (marked.parent / "DEFAULT").write_text("resid_post.16\n")
    assert find_default_sae([root]) == marked
    assert set(list_checkpoints([root])) == {first, marked}


def test_the_repository_checkpoints_are_found_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    repo = Path(__file__).resolve().parents[2]
    assert repo / "checkpoints" in checkpoint_roots()


# ---------------------------------------------------------------- loading
def test_load_reports_progress_and_notices(tmp_path, tiny_model_dir):
    sae_dir = _sae_folder(tmp_path / "sae")
    engine = PlaygroundEngine()
    seen = []
    engine.load(str(tiny_model_dir), sae_dir, progress=lambda f, m: seen.append((f, m)))
    assert engine.lm.d_model == 32 and engine.sae.n_latents == 64
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any("no feature catalog" in n for n in engine.notices)
    assert engine.strength_unit == "raw"


def test_a_catalog_of_another_sae_is_ignored_with_a_notice(tmp_path, tiny_model_dir):
    sae_dir = tmp_path / "sae"
    make_tiny_sae(seed=1).save(sae_dir)
    tiny_catalog().save(sae_dir)  # built for make_tiny_sae(seed=0)
    engine = PlaygroundEngine()
    engine.load(str(tiny_model_dir), sae_dir)
    assert engine.catalog is None and engine.strength_unit == "raw"
    assert any("built for another SAE" in n for n in engine.notices)


def test_load_without_sae_is_baseline_only(tiny_model_dir):
    engine = PlaygroundEngine()
    engine.load(str(tiny_model_dir), None)
    assert not engine.has_sae and any("no SAE" in n for n in engine.notices)
    _, gen = run(engine)
    assert len(gen.texts) == 1 and gen.finished


def test_sae_that_does_not_fit_is_a_clear_error(tmp_path):
    cfg = SAEConfig(d_in=16, n_latents=32, k=4, hookpoint="resid_post.1")
    TopKSAE(cfg).save(tmp_path / "wrong")
    engine = PlaygroundEngine(make_tiny_lm("llama"))
    with pytest.raises(ValueError, match="d_in=16"):
        engine.load_sae(tmp_path / "wrong")
    with pytest.raises(ValueError, match="no SAE checkpoint"):
        engine.load_sae(tmp_path / "missing")


# ---------------------------------------------------------------- the feature set
def test_feature_set_operations():
    engine = make_engine(catalog=True)
    f = engine.add_feature(5)
    assert (f.latent, f.mode, f.strength, f.enabled) == (5, "clamp", 10.0, True)  # ×max units
    assert engine.add_feature(5) is f  # no duplicates
    engine.add_feature(7, strength=-3, mode="add")
    engine.set_strength(5, 12.5)
    engine.set_strength(7, 1e9)  # clamped to the slider's limit
    assert (
        engine.feature(5).strength == 12.5
        and engine.feature(7).strength == engine.slider_steps()[2]
    )
    engine.toggle(5)
    assert [f.latent for f in engine.active_interventions()] == [7]
    assert engine.cycle_mode(7).mode == "ablate" and engine.cycle_mode(7).mode == "clamp"
    engine.remove_feature(5)
    assert [f.latent for f in engine.features] == [7]
    with pytest.raises(ValueError, match="out of range"):
        engine.add_feature(64)
    with pytest.raises(ValueError, match="unknown mode"):
        engine.set_mode(7, "multiply")
    with pytest.raises(ValueError, match="not in the active set"):
        engine.toggle(5)


def test_settings_are_validated():
    engine = make_engine(catalog=False)
    engine.update_settings(
        temperature=0.7, top_p=0.9, max_new_tokens="12", seed=3, positions="generated"
    )
    assert engine.settings.max_new_tokens == 12 and engine.settings.positions == "generated"
    for bad in ({"temperature": -1}, {"top_p": 0}, {"max_new_tokens": 0}, {"positions": "middle"}):
        with pytest.raises(ValueError):
            engine.update_settings(**bad)
    assert engine.settings.temperature == 0.7  # unchanged by the failed updates


# ---------------------------------------------------------------- generation
def test_baseline_and_steered_rows_stream_and_differ_only_when_steered():
    engine = make_engine(catalog=False)
    steps, gen = run(engine)
    assert gen.finished and not gen.cancelled
    assert len(steps) == 6 and all(len(step) == 2 for step in steps)
    assert gen.texts[0] == gen.texts[1]  # no active features: identical rows
    engine.clear_history()
    engine.add_feature(3, strength=200, mode="add")
    _, steered = run(engine)
    assert steered.texts[0] == gen.texts[0]  # the baseline does not move
    assert steered.token_ids[1] != steered.token_ids[0]


def test_chat_history_follows_the_steered_replies():
    engine = make_engine(catalog=False)
    assert engine.chat_mode  # the tiny tokenizer has a chat template
    run(engine, "Hello there")
    run(engine, "And again")
    assert [t.user for t in engine.history] == ["Hello there", "And again"]
    messages = engine.messages_for("third")
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant", "user"]
    engine.update_settings(chat=False)
    assert not engine.chat_mode
    run(engine, "plain completion")
    assert len(engine.history) == 2  # completion mode keeps no history


def test_regenerate_forgets_only_the_turn_that_answered_that_message():
    engine = make_engine(catalog=False)
    run(engine, "Hello there")
    run(engine, "And again")
    assert not engine.forget_last_turn("Hello there")  # not the last turn: kept
    assert engine.forget_last_turn("And again")
    assert [t.user for t in engine.history] == ["Hello there"]
    engine.update_settings(chat=False)
    assert not engine.forget_last_turn("Hello there")  # completion mode: history untouched
    assert len(engine.history) == 1


def test_features_are_named_by_number_one_way():
    assert [feature_number(q) for q in ("#12", " 12 ", "feature 12", "feature #7")] == [
        12,
        12,
        12,
        7,
    ]
    assert [feature_number(q) for q in ("bridge", "#", "12a", "-3", "")] == [None] * 5


def test_cancel_stops_between_tokens_and_releases_the_model():
    engine = make_engine(catalog=False, max_new_tokens=20)
    calls = []
    steps, gen = run(engine, cancel=lambda: calls.append(1) or len(calls) >= 2)
    assert len(steps) == 2 and gen.cancelled and not gen.finished
    assert engine.history == []  # a cancelled reply is not part of the conversation
    # Closing the stream early also releases the lock.
    stream = engine.generate(PROMPT)
    next(stream)
    stream.close()
    assert engine.last.cancelled
    _, again = run(engine)
    assert again.finished


def test_empty_prompt_is_an_error():
    engine = make_engine(catalog=False)
    with pytest.raises(ValueError, match="empty"):
        run(engine, "   ")


# ---------------------------------------------------------------- finding and inspecting
def test_find_search_and_inspect_with_a_catalog():
    engine = make_engine(catalog=True)
    hits = engine.find_by_text("The Golden Gate Bridge")
    assert hits and all(h.label for h in hits)
    assert all(
        h.score > 0 for h in hits
    )  # relative activations, in steer.features.catalog's ranking
    found = engine.search("bridge")
    assert found and all(isinstance(h.latent, int) for h in found)
    assert engine.search("#12")[0].latent == 12
    info = engine.inspect(hits[0].latent)
    assert info.max_act and info.contexts and len(info.top_tokens) == 10
    assert engine.related_features(hits[0].latent) == []
    entry = engine.catalog.entry(hits[0].latent)  # the inspector shows the catalog's entry
    assert info.latent == entry.index and info.contexts == entry.contexts
    assert info.label == entry.label and info.frequency == entry.frequency


def test_without_catalog_text_search_works_and_label_search_explains():
    engine = make_engine(catalog=False)
    assert engine.find_by_text("Paris is the capital")
    with pytest.raises(ValueError, match="no feature catalog"):
        engine.search("bridge")
    info = engine.inspect(3)
    assert info.label == "" and len(info.top_tokens) == 10 and info.contexts == []


def test_token_activations_cover_prompt_and_both_completions():
    engine = make_engine(catalog=False)
    with pytest.raises(ValueError, match="generate something first"):
        engine.token_activations(3)
    engine.add_feature(3, strength=50, mode="add")
    _, gen = run(engine)
    view = engine.token_activations(3)
    assert len(view.prompt.tokens) == len(gen.prompt_ids) == len(view.prompt.acts)
    assert len(view.baseline.acts) == len(gen.token_ids[0])
    assert len(view.steered.acts) == len(gen.token_ids[1])
    assert view.scale > 0


# ---------------------------------------------------------------- presets
def test_presets_round_trip_in_the_generate_format(tmp_path):
    from steer.steering.presets import load_preset

    engine = make_engine(tmp_path, catalog=False)
    engine.add_feature(3, strength=20, mode="add")
    engine.add_feature(9, mode="ablate")
    engine.toggle(9)
    engine.update_settings(temperature=0.5, seed=7)
    path = engine.save_preset("golden")
    assert path == tmp_path / "presets" / "golden.json" and engine.list_presets() == [path]
    data = json.loads(path.read_text())
    assert data["interventions"][0] == {
        "latent": 3,
        "strength": 20.0,
        "mode": "add",
        "enabled": True,
    }
    assert load_preset(path).settings.seed == 7  # readable by `steer generate --preset`

    other = make_engine(tmp_path, catalog=False)
    other.load_preset("golden")
    assert [(f.latent, f.strength, f.mode, f.enabled) for f in other.features] == [
        (3, 20.0, "add", True),
        (9, 0.0, "ablate", False),
    ]
    assert other.settings.temperature == 0.5
    other.load_preset(str(path))  # a path works too

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"interventions": [{"latent": 999, "strength": 1.0}]}))
    with pytest.raises(ValueError, match="out of range"):
        other.load_preset(bad)
    with pytest.raises(ValueError, match="no preset"):
        other.load_preset("nope")


# ---------------------------------------------------------------- no Textual in the engine
def test_engine_and_sae_import_without_textual():
    code = (
        "import sys; sys.modules['textual'] = None\n"
        "import sae, steer.app.engine, steer.steering, steer.steering.generate, steer.features.catalog, steer.steering.presets\n"
        "assert not any(m.startswith('textual.') for m in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_a_playground_preset_drives_steer_generate(tmp_path, tiny_model_dir):
    from typer.testing import CliRunner

    from steer.cli.main import app as cli

    sae_dir = _sae_folder(tmp_path / "sae")
    engine = PlaygroundEngine(presets_dir=tmp_path)
    engine.load(str(tiny_model_dir), sae_dir)
    engine.add_feature(3, strength=200, mode="add")
    engine.update_settings(max_new_tokens=5)
    path = engine.save_preset("p")
    _, gen = run(engine, "Hello")
    args = [
        "generate",
        "--sae",
        str(sae_dir),
        "--model",
        str(tiny_model_dir),
        "--preset",
        str(path),
    ]
    result = CliRunner().invoke(cli, [*args, "--prompt", "Hello", "--json", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    # The same completions as the playground's (same preset, same seed, same batch).
    assert out["steered"]["token_ids"] == gen.token_ids[1] != gen.token_ids[0]
    assert out["baseline"]["token_ids"] == gen.token_ids[0]
