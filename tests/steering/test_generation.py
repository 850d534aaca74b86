"""Streaming side-by-side generation, prompts, readouts and presets on tiny models."""

import pytest
import torch
from conftest import make_tiny_lm

import steer.steering.generate as generation
from sae import SAEConfig, TopKSAE
from steer.steering import Intervention
from steer.steering.generate import (
    GenerationSettings,
    IncrementalDecoder,
    build_prompt_ids,
    feature_activations,
    generate_rows,
    generate_text,
    top_features,
)
from steer.steering.presets import Preset, load_preset, save_preset


def make_sae(lm, n_latents=64, k=8, seed=0):
    torch.manual_seed(seed)
    return TopKSAE(SAEConfig(lm.d_model, n_latents, k, hookpoint="resid_post.2"))


@pytest.fixture
def lm():
    lm = make_tiny_lm("llama")
    with torch.no_grad():  # sharper predictions than a fresh random init: steering shows
        lm.unembed.weight.mul_(30)
    return lm


def run(lm, sae, ids, rows, settings, **kw):
    tokens = [[] for _ in rows]
    texts = ["" for _ in rows]
    steps = 0
    for events in generate_rows(lm, sae, ids, rows, settings, **kw):
        steps += 1
        for e in events:
            tokens[e.row].append(e.token_id)
            texts[e.row] += e.text
    return tokens, texts, steps


STEER = [Intervention(3, 25.0, "clamp"), Intervention(7, -10.0, "add")]


@pytest.mark.parametrize("positions", ["all", "generated"])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_batched_side_by_side_equals_separate_generations(lm, positions, temperature):
    sae = make_sae(lm)
    ids = build_prompt_ids(lm, "The Golden Gate Bridge is", chat=False)
    settings = GenerationSettings(
        max_new_tokens=12, temperature=temperature, top_p=0.9, seed=3, positions=positions
    )
    together, _, _ = run(lm, sae, ids, [[], STEER], settings)
    alone_base, _, _ = run(lm, sae, ids, [[]], settings)
    alone_steer, _, _ = run(lm, sae, ids, [STEER], settings)
    assert together == [alone_base[0], alone_steer[0]]
    assert together[0] != together[1]  # the steering does something


@pytest.mark.parametrize("positions", ["all", "generated"])
def test_a_prompt_per_row_equals_each_prompt_alone(lm, positions):
    """Several prompts of one length in one batch (what --toward's calibration does) give
    each row what its prompt gives alone, steered or not."""
    sae = make_sae(lm)
    a = build_prompt_ids(lm, "The Golden Gate Bridge is", chat=False)
    b = a.flip(0)  # another prompt of the same length
    settings = GenerationSettings(max_new_tokens=10, positions=positions)
    stacked = torch.stack([a, a, b, b])  # (4, P): a prompt per row
    together, _, _ = run(lm, sae, stacked, [[], STEER, [], STEER], settings)
    want_a, _, _ = run(lm, sae, a, [[], STEER], settings)
    want_b, _, _ = run(lm, sae, b, [[], STEER], settings)
    assert together == want_a + want_b
    assert together[0] != together[2]  # the prompts differ, so do the replies
    with pytest.raises(ValueError, match="one per row"):
        run(lm, sae, stacked[:3], [[], STEER], settings)


def test_events_stream_and_rows_stop_on_eos(monkeypatch):
    lm = make_tiny_lm("llama")
    with torch.no_grad():
        lm.unembed.weight.mul_(5)  # varied samples, still steerable
    sae = make_sae(lm)
    ids = build_prompt_ids(lm, "The quick brown", chat=False)
    settings = GenerationSettings(max_new_tokens=10, temperature=1.0)
    monkeypatch.setattr(generation, "eos_ids", lambda _lm: set())
    (base, steered), _, _ = run(lm, sae, ids, [[], STEER], settings)
    # Make a token that only the baseline row produces (at step s) the EOS token.
    s = next(s for s in range(1, 8) if base[s] not in base[:s] and base[s] not in steered)
    monkeypatch.setattr(generation, "eos_ids", lambda _lm: {base[s]})
    seen = []
    for events in generate_rows(lm, sae, ids, [[], STEER], settings):
        seen.append([(e.row, e.step, e.token_id, e.done) for e in events])
    assert seen[s] == [
        (0, s, base[s], True),
        (1, s, steered[s], False),
    ]  # row 0 ends at its EOS ...
    assert all(len(step) == 1 and step[0][0] == 1 for step in seen[s + 1 :])  # ... row 1 goes on
    assert [step[-1][2] for step in seen] == steered  # undisturbed by row 0 leaving the batch
    assert seen[-1][-1][3] and len(seen) == 10


def test_cancel_is_checked_between_tokens(lm):
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) >= 3

    ids = build_prompt_ids(lm, "Paris is", chat=False)
    _, _, steps = run(lm, None, ids, [[]], GenerationSettings(max_new_tokens=20), cancel=cancel)
    assert steps == 3


def test_generation_works_for_every_family():
    for family in ("gpt2", "gpt_neox"):
        lm = make_tiny_lm(family)
        sae = make_sae(lm)
        out = generate_text(
            lm, sae, "Rivers flow", [[], STEER], GenerationSettings(max_new_tokens=5, chat=False)
        )
        assert [len(o["token_ids"]) for o in out] == [5, 5]


def test_incremental_decoding_keeps_multibyte_characters_whole(tiny_tokenizer):
    text = "héllo wörld 😀 çà — 東京"
    ids = tiny_tokenizer(text, add_special_tokens=False).input_ids
    assert len(ids) > len(text) // 2  # byte-level pieces split the characters
    dec = IncrementalDecoder(tiny_tokenizer)
    pieces = [dec.push(i) for i in ids]
    pieces.append(dec.flush())
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)


def test_prompts_chat_template_and_errors(lm, tiny_tokenizer):
    chat = build_prompt_ids(lm, "Hi there")
    assert tiny_tokenizer.decode(chat).endswith("<|im_start|>assistant\n")
    plain = build_prompt_ids(lm, "Hi there", chat=False)
    assert tiny_tokenizer.decode(plain) == "Hi there"
    history = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! How"},
    ]
    cont = tiny_tokenizer.decode(build_prompt_ids(lm, history))
    assert cont.endswith("<|im_start|>assistant\nHello! How")
    for empty in ("", "   ", [{"role": "user", "content": " "}]):
        with pytest.raises(ValueError, match="the prompt is empty"):
            build_prompt_ids(lm, empty)
    with pytest.raises(ValueError, match="context of 256 tokens"):
        next(
            generate_rows(
                lm,
                None,
                torch.ones(250, dtype=torch.long),
                [[]],
                GenerationSettings(max_new_tokens=10),
            )
        )
    with pytest.raises(ValueError, match="steering needs an SAE"):
        next(generate_rows(lm, None, plain, [STEER], GenerationSettings()))
    with pytest.raises(ValueError, match="temperature"):
        GenerationSettings(temperature=-1)


def test_readouts_match_the_sae_code(lm):
    sae = make_sae(lm)
    ids = build_prompt_ids(lm, "The quick brown fox jumps over the lazy dog.", chat=False)
    with torch.inference_mode():
        dense = sae.encode_dense(lm.residual(ids[None], 2)[0])  # (T, n)
    acts = feature_activations(lm, sae, ids, [3, 7, 11])
    torch.testing.assert_close(acts, dense[:, [3, 7, 11]])
    at = top_features(lm, sae, ids, n=5, position=-1)
    assert [i for i, _ in at] == dense[-1].topk(5).indices.tolist()
    overall = top_features(lm, sae, ids, n=5)
    assert overall[0][1] == pytest.approx(float(dense[1:].max()))
    with pytest.raises(ValueError, match="out of range"):
        feature_activations(lm, sae, ids, [64])


def test_presets_round_trip(tmp_path):
    settings = GenerationSettings(max_new_tokens=7, temperature=0.5, positions="generated")
    path = save_preset(tmp_path / "golden.json", STEER, settings, sae="ckpt/x")
    preset = load_preset(path)
    assert preset == Preset(STEER, settings, "ckpt/x", "golden", "")
    (tmp_path / "bad.json").write_text('{"interventions": [{"latent": 1, "mode": "boost"}]}')
    with pytest.raises(ValueError, match="unknown steering mode"):
        load_preset(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="no preset file"):
        load_preset(tmp_path / "missing.json")


def test_logits_to_keep_only_where_the_forward_takes_it(lm):
    class OlderModel(torch.nn.Module):  # a forward from before logits_to_keep
        def forward(self, input_ids, past_key_values=None, use_cache=None):
            raise AssertionError("not called")

    assert generation._keeps_logits(type(lm.model))
    assert not generation._keeps_logits(OlderModel)
