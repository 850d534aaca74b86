"""Model loading and residual hook points, on tiny in-process models and the embedded one."""

import pytest
import torch
from conftest import make_tiny_lm, requires_embedded

from steer.lm.models import ModelLoadError, hookpoint_name, load_model, parse_hookpoint

FAMILIES = ["gpt2", "llama", "gpt_neox"]


@pytest.mark.parametrize("family", FAMILIES)
def test_hook_points_and_truncated_forward_match_full_forward(family, tiny_tokenizer):
    lm = make_tiny_lm(family)
    assert lm.n_layers == 4 and lm.d_model == 32
    assert lm.hookpoints() == [f"resid_post.{i}" for i in range(4)]
    ids = tiny_tokenizer(["The Golden Gate Bridge is red."], return_tensors="pt").input_ids
    with torch.no_grad():
        full = lm.model(ids, output_hidden_states=True).hidden_states
        for layer in range(lm.n_layers - 1):  # the last hidden state has the final norm applied
            resid = lm.residual(ids, layer)
            assert resid.shape == (1, ids.shape[1], 32)
            torch.testing.assert_close(resid, full[layer + 1])


@pytest.mark.parametrize("family", FAMILIES)
def test_truncated_forward_skips_later_blocks(family, tiny_tokenizer):
    lm = make_tiny_lm(family)
    ran = []
    hooks = [
        b.register_forward_hook(lambda m, a, o, i=i: ran.append(i)) for i, b in enumerate(lm.blocks)
    ]
    lm.residual(tiny_tokenizer(["hello"], return_tensors="pt").input_ids, 1)
    for h in hooks:
        h.remove()
    assert ran == [0, 1]


def test_layer_out_of_range_is_a_clear_error(tiny_lm):
    with pytest.raises(ModelLoadError, match="out of range.*4 blocks"):
        tiny_lm.check_layer(4)


def test_hookpoint_names_round_trip():
    assert parse_hookpoint(hookpoint_name(7)) == 7
    assert parse_hookpoint("3") == 3
    with pytest.raises(ValueError, match="unknown hook point"):
        parse_hookpoint("mlp_out.3")


def test_unknown_model_offline_is_a_clear_error():
    with pytest.raises(ModelLoadError, match="cannot load model 'no-such-org/no-such-model'"):
        load_model("no-such-org/no-such-model")


def test_local_directory_loads_through_transformers(tiny_model_dir):
    lm = load_model(str(tiny_model_dir))
    assert lm.model_type == "llama" and lm.n_layers == 4


@requires_embedded
def test_embedded_model_loads_and_knows_paris():
    lm = load_model("smollm2-135m")
    assert (lm.n_layers, lm.d_model, lm.model_type) == (30, 576, "llama")
    ids = lm.tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        out = lm.model.generate(ids, max_new_tokens=3, do_sample=False)
    assert "Paris" in lm.tokenizer.decode(out[0, ids.shape[1] :])


def test_training_default_is_gpt2_when_cached_else_the_embedded_model(tmp_path, monkeypatch):
    import huggingface_hub.constants

    from steer.lm import models

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the Hub does not answer
    assert models.default_training_model() == "smollm2-135m"

    # A cached GPT-2, laid out as huggingface_hub writes it.
    repo = tmp_path / "models--gpt2"
    snapshot = repo / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    (snapshot / "config.json").write_text("{}")
    assert models.default_training_model() == "smollm2-135m"  # config without weights
    (snapshot / "model.safetensors").write_bytes(b"")
    assert models.default_training_model() == "gpt2"

    # Online, GPT-2 can be downloaded.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setattr(models, "hub_reachable", lambda timeout=3.0: True)
    assert models.default_training_model() == "gpt2"
