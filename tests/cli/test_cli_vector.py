"""`steer vector`: build, show, decompose and list contrastive vectors, end to end."""

import json

import pytest
import torch
from builders import invoke, planted_sae
from conftest import make_tiny_lm

from sae import load_sae
from steer.steering.vectors import SteeringVector, build_vector, read_vector, save_vector

POS = ["The Golden Gate Bridge is red.", "A Bridge over the river."]
NEG = ["Paris is the capital of France.", "Music has rhythm."]


@pytest.fixture
def sae_dir(tiny_model_dir, tmp_path):
    """The planted SAE, in a folder of this test's own (vectors are written beside it)."""
    sae = planted_sae(make_tiny_lm("llama"))
    sae.cfg.model_name = str(tiny_model_dir)
    folder = tmp_path / "tiny-l2"
    sae.save(folder)
    return folder


def test_build_saves_the_difference_of_means_and_decomposes_it(sae_dir, tmp_path, one_thread):
    neg_file = tmp_path / "neg.txt"
    neg_file.write_text("# neutral prompts\n" + "\n".join(NEG) + "\n\n")
    result = invoke(
        "vector", "bridge", "--sae", sae_dir, "-p", POS[0], "-p", POS[1], "-n", neg_file,
        "--top", 5, "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["name"] == "bridge" and out["positive"] == POS and out["negative"] == NEG
    assert out["hookpoint"] == "resid_post.2" and out["strength_units"] == "raw"
    saved = read_vector("bridge", sae_dir)
    lm = make_tiny_lm("llama")
    with torch.inference_mode():
        want = build_vector(lm, load_sae(sae_dir), "bridge", POS, NEG)
    torch.testing.assert_close(saved.direction, want.direction)
    assert out["scale"] == pytest.approx(want.scale, rel=1e-3)
    assert len(out["features"]) == 5
    explained = [f["explained"] for f in out["features"]]
    assert explained == sorted(explained) and out["explained"] == explained[-1]
    assert set(out["features"][0]) == {"feature", "weight", "strength", "explained", "label"}
    # shown again from disk: the same decomposition
    again = json.loads(invoke("vector", "bridge", "--sae", sae_dir, "--top", 5, "--json").stdout)
    assert again["features"] == out["features"]


def test_a_planted_vector_is_shown_as_its_three_features(sae_dir):
    sae = load_sae(sae_dir)
    latents, weights = [0, 11, 40], [4.0, -1.5, 2.5]
    dirs = sae.decoder_directions(torch.tensor(latents)).detach()
    save_vector(sae_dir, SteeringVector("planted", torch.tensor(weights) @ dirs))
    result = invoke("vector", "planted", "--sae", sae_dir)
    assert result.exit_code == 0, result.output
    assert "3 features explain 100% of the vector" in result.stdout
    assert "a saved direction" in result.stdout
    # the largest contribution first; the expression steers with them
    assert "steer generate --steer '4 #0:add + 2.5 #40:add - 1.5 #11:add'\n" in result.stdout
    out = json.loads(invoke("vector", "planted", "--sae", sae_dir, "--json").stdout)
    got = {f["feature"]: round(f["weight"], 3) for f in out["features"]}
    assert got == dict(zip(latents, weights, strict=True))


def test_list_shows_saved_vectors(sae_dir):
    assert "no vectors saved" in invoke("vector", "--list", "--sae", sae_dir).stdout
    save_vector(sae_dir, SteeringVector("formal", torch.ones(32)))
    out = json.loads(invoke("vector", "--list", "--sae", sae_dir, "--json").stdout)
    assert [v["name"] for v in out["vectors"]] == ["formal"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["bad-name", "-p", "x", "-n", "y"], "bad vector name 'bad-name'"),
        (["v", "-p", "x"], "give both --positive and --negative"),
        (["v", "-p", "x", "-n", "  "], "--negative: an empty prompt"),
        (["missing"], "no vector 'missing'"),
        ([], "give the vector's NAME"),
        (["v", "--top", "0"], "--top must be positive"),
        (["v", "-p", "x", "-n", "y", "--tokens", "first"], "unknown token reduction"),
    ],
)
def test_bad_input_is_one_line(sae_dir, args, message, one_thread):
    result = invoke("vector", *args, "--sae", sae_dir)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: {message}")
    assert "Traceback" not in result.output


def test_an_existing_vector_is_replaced_only_with_force(sae_dir, one_thread):
    save_vector(sae_dir, SteeringVector("v", torch.ones(32)))
    result = invoke("vector", "v", "--sae", sae_dir, "-p", POS[0], "-n", NEG[0])
    assert result.exit_code == 1 and "--force replaces it" in result.stderr
    result = invoke("vector", "v", "--sae", sae_dir, "-p", POS[0], "-n", NEG[0], "--force")
    assert result.exit_code == 0, result.output
    assert read_vector("v", sae_dir).positive == [POS[0]]
