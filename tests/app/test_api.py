"""The Python API (steer.api): load, steer in a `with` block, read activations."""

import pytest
import torch
from conftest import requires_embedded

import steer.api as steer

PROMPT = "The Golden Gate"
EXPR = "40 #0:add @generated + 3 #5 @when:#0>0.5"


@pytest.fixture(scope="module")
def lm(sae_dir):
    return steer.load(sae=sae_dir)  # the tiny model the SAE names in its cfg.json


def test_steering_in_a_with_block(lm):
    base = lm.generate(PROMPT, 6)
    with lm.steer(EXPR) as inside:
        assert inside is lm and lm.expression == EXPR
        steered = lm.generate(PROMPT, 6)
        with lm.steer("#0:ablate"):  # blocks nest; the outer levers come back
            assert lm.expression == "#0:ablate"
        assert lm.expression == EXPR
    assert lm.expression == "" and lm.generate(PROMPT, 6) == base
    assert steered != base
    assert lm.generate(PROMPT, 6, steer=EXPR) == steered
    with steer.steered(EXPR):  # the last model loaded
        assert lm.generate(PROMPT, 6) == steered
    baseline, again = lm.compare(PROMPT, EXPR, 6)
    assert (baseline, again) == (base, steered)


def test_reading_features(lm):
    text = "The Golden Gate Bridge is a bridge. The Bridge is red."
    tokens = lm.tokens(text)
    acts = lm.activations(text, [0, 5])  # (T, 2)
    assert acts.shape == (len(tokens), 2)
    on = torch.tensor([t == " Bridge" for t in tokens])
    assert torch.equal(acts[:, 0] > 0, on)  # the planted feature: " Bridge" and nowhere else
    assert lm.activations(text).shape == (len(tokens), lm.sae.n_latents)
    assert lm.features(text)[0].latent == 0
    assert lm.units == "raw" and "tiny" in repr(lm)


def test_bad_input_is_a_one_line_value_error(lm):
    with pytest.raises(ValueError, match=r"^steering expression, column 5: "):
        with lm.steer("2.5 #"):
            pass
    assert lm.expression == ""
    with pytest.raises(ValueError, match="feature 999 is out of range"):
        lm.generate(PROMPT, 2, steer="#999")
    with pytest.raises(ValueError, match="give the SAE folder"):
        steer.load(model="gpt2")


@requires_embedded
def test_the_embedded_model_and_shipped_sae_load_by_default():
    lm = steer.load()
    assert "smollm2" in repr(lm) and lm.units == "×max"
    base, steered = lm.compare("Tell me about dogs.", "#0:ablate + 4 #100", 4)
    assert isinstance(base, str) and isinstance(steered, str)
    assert lm.activations("A dog barks.", [100]).shape[1] == 1
