"""`steer generate`, `steer features`, `steer index` end to end through typer's runner."""

import json

import pytest
import torch
from builders import TEXTS, invoke
from conftest import make_tiny_lm

from sae import SAEConfig, TopKSAE
from steer.steering import Intervention
from steer.steering.generate import GenerationSettings, generate_text


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "texts.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    return path


def assert_one_line_error(result, message):
    assert result.exit_code == 1, result.output
    assert result.stderr.strip() == f"error: {message}" or result.stderr.startswith(
        f"error: {message}"
    )
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_generate_json_matches_the_library(sae_dir, tiny_model_dir):
    result = invoke(
        "generate",
        "--sae",
        sae_dir,
        "--prompt",
        "The Golden Gate",
        "--feature",
        "0=40:add",
        "--feature",
        "5=2",
        "--max-tokens",
        6,
        "--temperature",
        0.7,
        "--seed",
        4,
        "--json",
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["strength_units"] == "raw" and out["hookpoint"] == "resid_post.2"
    assert [iv["latent"] for iv in out["interventions"]] == [0, 5]
    sae = TopKSAE.load(sae_dir)
    lm = make_tiny_lm("llama")
    rows = [[], [Intervention(0, 40.0, "add"), Intervention(5, 2.0, "clamp")]]
    expected = generate_text(
        lm,
        sae,
        "The Golden Gate",
        rows,
        GenerationSettings(max_new_tokens=6, temperature=0.7, seed=4),
    )
    assert [out["baseline"], out["steered"]] == expected


def test_generate_prints_both_completions(sae_dir):
    result = invoke(
        "generate",
        "--sae",
        sae_dir,
        "-p",
        "Dogs are",
        "-f",
        "0=10",
        "--max-tokens",
        4,
        "--positions",
        "generated",
        "--no-chat",
    )
    assert result.exit_code == 0, result.output
    assert "baseline" in result.stdout and "steered: 10 #0" in result.stdout  # the expression
    assert "positions=generated" in result.stdout


def test_generate_presets_round_trip(sae_dir, tmp_path):
    preset = tmp_path / "p.json"
    first = invoke(
        "generate",
        "--sae",
        sae_dir,
        "-p",
        "Paris is",
        "-f",
        "0=30:add",
        "--max-tokens",
        5,
        "--save-preset",
        preset,
        "--json",
    )
    assert first.exit_code == 0, first.output
    saved = json.loads(preset.read_text())
    assert saved["interventions"][0] == {
        "latent": 0,
        "strength": 30.0,
        "mode": "add",
        "enabled": True,
    }
    again = invoke("generate", "--sae", sae_dir, "-p", "Paris is", "--preset", preset, "--json")
    assert json.loads(again.stdout)["steered"] == json.loads(first.stdout)["steered"]


def test_index_then_features(sae_dir, corpus):
    result = invoke(
        "index",
        "--sae",
        sae_dir,
        "--corpus",
        corpus,
        "--tokens",
        "3k",
        "--ctx-len",
        32,
        "--batch-size",
        8,
    )
    assert result.exit_code == 0, result.output
    assert "64 features" in result.stdout and (sae_dir / "catalog" / "catalog.json").is_file()

    entry = invoke("features", "--sae", sae_dir, "--id", 0)
    assert entry.exit_code == 0, entry.output
    title = entry.stdout.splitlines()[0]
    assert "feature 0: " in title and "Bridge" in title and "raises" in entry.stdout
    # steer index fitted N2G patterns on the text after its sample: the entry shows them
    assert "explained" in entry.stdout and "n2g · precision" in entry.stdout

    as_json = json.loads(invoke("features", "--sae", sae_dir, "--id", 0, "--json").stdout)
    assert all(c["tokens"][c["max_pos"]] == " Bridge" for c in as_json["contexts"])

    by_text = invoke("features", "--sae", sae_dir, "The Golden Gate Bridge", "--json")
    rows = json.loads(by_text.stdout)["features"]
    assert (
        rows[0]["feature"] == 0 and rows[0]["token"] == " Bridge" and "Bridge" in rows[0]["label"]
    )
    table = invoke("features", "--sae", sae_dir, "The Golden Gate Bridge", "-n", 3)
    assert table.exit_code == 0 and "Bridge" in table.stdout

    found = invoke("features", "--sae", sae_dir, "--search", "bridge", "--json")
    assert json.loads(found.stdout)[0]["index"] == 0

    # With a catalog, strengths are relative to each feature's max activation.
    gen = invoke("generate", "--sae", sae_dir, "-p", "Hi", "-f", "0=2", "--max-tokens", 2, "--json")
    assert json.loads(gen.stdout)["strength_units"] == "relative"
    assert json.loads(gen.stdout)["explanations"]["0"]["source"] == "n2g"
    header = invoke("generate", "--sae", sae_dir, "-p", "Hi", "-f", "0=2", "--max-tokens", 2)
    assert (
        "n2g" in header.stdout and "precision" in header.stdout
    )  # the lever's label with its explanation's score
    raw = invoke(
        "generate", "--sae", sae_dir, "-p", "Hi", "-f", "0=2", "--max-tokens", 2, "--json", "--raw"
    )
    assert json.loads(raw.stdout)["strength_units"] == "raw"


def test_errors_are_one_line(sae_dir, tiny_model_dir, tmp_path, corpus):
    assert_one_line_error(
        invoke("generate", "--sae", sae_dir, "-p", "Hi", "-f", "99999=10"),
        "feature 99999 is out of range: the SAE has 64 latents (0..63)",
    )
    assert_one_line_error(
        invoke("generate", "--sae", sae_dir, "-p", "  ", "-f", "1=10"), "the prompt is empty"
    )
    assert_one_line_error(
        invoke("generate", "--sae", sae_dir, "-f", "1=10"), "give a prompt with --prompt"
    )
    assert_one_line_error(
        invoke("generate", "--sae", sae_dir, "-p", "Hi", "-f", "1"), "feature '1' has no strength"
    )
    assert_one_line_error(invoke("generate", "--sae", sae_dir, "-p", "Hi"), "nothing to steer")
    assert_one_line_error(
        invoke("generate", "--sae", tmp_path / "none", "-p", "Hi", "-f", "1=1"),
        "no SAE checkpoint folder",
    )

    wrong = tmp_path / "wrong"
    TopKSAE(SAEConfig(16, 32, 4, hookpoint="resid_post.1", model_name=str(tiny_model_dir))).save(
        wrong
    )
    assert_one_line_error(
        invoke("generate", "--sae", wrong, "-p", "Hi", "-f", "1=1"),
        "the SAE does not fit",
    )
    assert_one_line_error(invoke("features", "--sae", wrong, "some text"), "the SAE does not fit")
    assert_one_line_error(
        invoke("index", "--sae", wrong, "--corpus", corpus), "the SAE does not fit"
    )

    assert_one_line_error(invoke("features", "--sae", sae_dir), "give exactly one of")
    assert_one_line_error(
        invoke("features", "--sae", sae_dir, "--id", 64), "feature 64 is out of range"
    )
    bare = tmp_path / "bare"
    TopKSAE(SAEConfig(32, 16, 4, hookpoint="resid_post.1", model_name=str(tiny_model_dir))).save(
        bare
    )
    assert_one_line_error(invoke("features", "--sae", bare, "--search", "x"), "no feature catalog")
    assert_one_line_error(
        invoke("index", "--sae", bare, "--corpus", tmp_path / "nope.jsonl"), "corpus"
    )
    assert_one_line_error(
        invoke("index", "--sae", bare, "--corpus", corpus, "--tokens", "lots"), "--tokens"
    )


def test_feature_entry_without_a_catalog_shows_the_logit_lens(tiny_model_dir, tmp_path):
    bare = tmp_path / "bare"
    torch.manual_seed(0)
    TopKSAE(SAEConfig(32, 16, 4, hookpoint="resid_post.1", model_name=str(tiny_model_dir))).save(
        bare
    )
    result = invoke("features", "--sae", bare, "--id", 3)
    assert result.exit_code == 0, result.output
    assert "no catalog" in result.stdout and "raises" in result.stdout
