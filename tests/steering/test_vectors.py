"""Contrastive vectors (built, saved, loaded) and their decomposition into SAE features."""

import json

import pytest
import torch
from builders import make_tiny_sae, planted_sae
from conftest import make_tiny_lm, requires_embedded

from sae import SAEConfig, TopKSAE
from steer.steering.decompose import decompose, feature_strengths
from steer.steering.vectors import (
    SteeringVector,
    build_vector,
    list_vectors,
    load_vector,
    read_vector,
    save_vector,
    vector_path,
)

POS = ["The Golden Gate Bridge is red.", "A Bridge over the river Bridge."]
NEG = ["Paris is the capital of France.", "Music has rhythm.", "The fox jumps."]


def _mean_one_by_one(lm, layer, prompts, tokens="mean"):
    """Brute force: each prompt alone (no padding), averaged over tokens 1.. or its last."""
    rows = []
    for p in prompts:
        ids = torch.tensor(lm.tokenizer(p)["input_ids"])[None]
        x = lm.residual(ids, layer)[0]  # (T, d)
        rows.append(x[-1] if tokens == "last" else x[1:].mean(0))
    return torch.stack(rows).mean(0)


@pytest.mark.parametrize("tokens", ["mean", "last"])
def test_vector_is_the_difference_of_prompt_means(tokens):
    lm = make_tiny_lm("llama")
    sae = planted_sae(lm)
    with torch.inference_mode():
        vec = build_vector(lm, sae, "bridge", POS, NEG, tokens=tokens)
        want = _mean_one_by_one(lm, 2, POS, tokens) - _mean_one_by_one(lm, 2, NEG, tokens)
    torch.testing.assert_close(vec.direction, want, rtol=1e-4, atol=1e-4)
    assert vec.scale == pytest.approx(float(want.norm()), rel=1e-4)
    # projections in strength units: the negative mean at p-, the positive mean at p- + 1
    with torch.inference_mode():
        neg_mean = _mean_one_by_one(lm, 2, NEG, tokens)
    assert float(vec.projection(neg_mean)) == pytest.approx(vec.negative_projection, abs=1e-4)
    assert float(vec.projection(neg_mean + want)) == pytest.approx(
        vec.negative_projection + 1, abs=1e-4
    )
    assert vec.hookpoint == "resid_post.2" and vec.positive == POS and vec.tokens == tokens


def test_saved_vector_loads_back_and_is_listed(tmp_path):
    direction = torch.randn(32)
    vec = SteeringVector("formal", direction, hookpoint="resid_post.1", negative_projection=-0.5)
    vec.positive, vec.negative = ["Dear Sir,"], ["hey"]
    path = save_vector(tmp_path, vec)
    assert path == tmp_path / "vectors" / "formal.safetensors"
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["positive"] == ["Dear Sir,"] and meta["d"] == 32
    assert meta["scale"] == pytest.approx(float(direction.norm()))
    back = read_vector("formal", tmp_path, sae=make_tiny_sae())
    torch.testing.assert_close(back.direction, direction)
    assert (back.negative_projection, back.negative, back.hookpoint) == (
        -0.5,
        ["hey"],
        "resid_post.1",
    )
    torch.testing.assert_close(load_vector("formal", tmp_path), direction)
    assert list_vectors(tmp_path) == ["formal"]
    assert list_vectors(tmp_path / "nowhere") == []
    # a bare direction file (no record) is a vector too
    path.with_suffix(".json").unlink()
    assert read_vector("formal", tmp_path).scale == pytest.approx(float(direction.norm()))


@pytest.mark.parametrize("name", ["", "2fast", "has space", "a-b", "../up", "v:x", "é"])
def test_bad_vector_names_are_refused(name, tmp_path):
    with pytest.raises(ValueError, match="bad vector name"):
        vector_path(tmp_path, name)


def test_missing_or_misfitting_vector_is_one_line(tmp_path):
    with pytest.raises(ValueError, match="no vector 'nope'.*none is saved"):
        load_vector("nope", tmp_path)
    save_vector(tmp_path, SteeringVector("wide", torch.ones(48)))
    with pytest.raises(ValueError, match="no vector 'nope'.*saved: wide"):
        load_vector("nope", tmp_path)
    with pytest.raises(ValueError, match="48 dimensions but the SAE reads 32"):
        read_vector("wide", tmp_path, sae=make_tiny_sae())
    (tmp_path / "vectors" / "broken.safetensors").write_text("not a tensor file")
    with pytest.raises(ValueError, match="cannot read vector"):
        load_vector("broken", tmp_path)


def test_build_refuses_empty_prompt_sets():
    lm = make_tiny_lm("llama")
    sae = planted_sae(lm)
    with pytest.raises(ValueError, match="no negative prompts"):
        build_vector(lm, sae, "x", POS, ["  "])
    with pytest.raises(ValueError, match="same mean"):
        build_vector(lm, sae, "x", POS, POS)


# ---------------------------------------------------------------------- decomposition
def _wide_sae(seed: int) -> TopKSAE:
    torch.manual_seed(seed)
    sae = TopKSAE(SAEConfig(d_in=64, n_latents=256, k=8, input_scale=0.5))
    sae.set_decoder_norm_to_unit()
    return sae


@pytest.mark.parametrize("seed", range(5))
def test_planted_three_feature_vector_decomposes_into_exactly_those(seed):
    sae = _wide_sae(seed)
    g = torch.Generator().manual_seed(100 + seed)
    latents = torch.randperm(sae.n_latents, generator=g)[:3].tolist()
    weights = [3.0, -2.0, 1.5]
    dirs = sae.decoder_directions(torch.tensor(latents)).detach()  # (3, d), norm 1/0.5
    v = sum(w * d for w, d in zip(weights, dirs, strict=True))
    out = decompose(sae, v, n=10)
    assert len(out.parts) == 3  # stopped once explained
    assert {p.latent: round(p.weight, 4) for p in out.parts} == dict(
        zip(latents, weights, strict=True)
    )
    assert out.fraction == pytest.approx(1.0, abs=1e-6)
    assert out.explained == sorted(out.explained)
    assert out.norm == pytest.approx(float(v.norm()), rel=1e-5)


def test_explained_fraction_is_one_minus_relative_residual():
    sae = _wide_sae(7)
    v = torch.randn(64, generator=torch.Generator().manual_seed(1))
    out = decompose(sae, v, n=4)
    assert len(out.parts) == 4
    dirs = sae.decoder_directions(torch.tensor([p.latent for p in out.parts])).detach()
    w = torch.tensor([p.weight for p in out.parts])
    rest = v - w @ dirs
    assert out.fraction == pytest.approx(1 - float(rest @ rest) / float(v @ v), abs=1e-5)
    # least squares on the picked latents: no other weights on them do better
    best = torch.linalg.lstsq(dirs.T, v[:, None]).solution[:, 0]
    torch.testing.assert_close(w, best, rtol=1e-4, atol=1e-4)


def test_feature_strengths_reproduce_the_vector_in_relative_units():
    sae = _wide_sae(3)
    dirs = sae.decoder_directions(torch.tensor([5, 9])).detach()
    out = decompose(sae, 2.0 * dirs[0] + 4.0 * dirs[1], n=5)
    max_acts = torch.ones(sae.n_latents)
    max_acts[5], max_acts[9] = 4.0, 8.0
    strengths = feature_strengths(out.parts, max_acts, 3.0)
    got = dict(zip([p.latent for p in out.parts], strengths, strict=True))
    assert got == pytest.approx({5: 3 * 2.0 / 4.0, 9: 3 * 4.0 / 8.0})


def test_decompose_bad_input():
    sae = _wide_sae(0)
    with pytest.raises(ValueError, match="zero"):
        decompose(sae, torch.zeros(64))
    with pytest.raises(ValueError, match="dimensions"):
        decompose(sae, torch.ones(3))


def test_planted_vector_on_the_shipped_decoder_decomposes_into_exactly_those():
    """The same check on a real dictionary: 9216 learned directions in 576 dimensions,
    far more correlated than random ones."""
    from pathlib import Path

    from sae import load_sae

    folder = Path(__file__).resolve().parents[2] / "checkpoints/smollm2-135m/resid_post.12/9216-k32"
    sae = load_sae(folder)
    latents, weights = [2374, 17, 5000], [6.0, 3.0, -2.0]
    dirs = sae.decoder_directions(torch.tensor(latents)).detach()
    out = decompose(sae, torch.tensor(weights) @ dirs, n=10)
    assert [p.latent for p in out.parts] == latents
    assert [round(p.weight, 3) for p in out.parts] == weights
    assert out.fraction == pytest.approx(1.0, abs=1e-5)


OCEAN = [
    "Tell me about the ocean.",
    "The waves of the ocean crashed on the shore.",
    "Whales swim deep in the ocean.",
    "I love sailing on the open sea.",
    "The ocean is vast and blue.",
]
NOT_OCEAN = [
    "Tell me about something.",
    "The children crashed into the door.",
    "Trucks drive far along the highway.",
    "I love reading in the afternoon.",
    "The sky is clear and bright.",
]


@requires_embedded
def test_a_contrastive_vector_steers_the_real_model(one_thread):
    """SmolLM2 and the shipped SAE: the README's ocean vector (five prompts against
    five), added at strength 2, turns a reply about the weekend to the sea."""
    from steer.steering import Intervention, open_sae
    from steer.steering.generate import GenerationSettings, generate_text
    from steer.steering.toward import names_concept

    lm, sae = open_sae("checkpoints/smollm2-135m/resid_post.12/9216-k32")
    vec = build_vector(lm, sae, "ocean", OCEAN, NOT_OCEAN)  # the README's example
    lever = Intervention("ocean", 2.0, "add", direction=vec.direction)
    settings = GenerationSettings(max_new_tokens=24)
    base, steered = generate_text(lm, sae, "Tell me about your weekend.", [[], [lever]], settings)
    assert not names_concept(base["text"], ["ocean", "sea"])
    assert names_concept(steered["text"], ["ocean", "sea"]), steered["text"]
