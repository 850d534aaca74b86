"""Steering toward a concept: concept tokens, the lever set and its calibration against
planted ground truth and brute force on tiny models, coherence."""

import pytest
import torch
from conftest import make_tiny_lm

from sae import SAEConfig, TopKSAE
from steer.steering import Intervention
from steer.steering.coherence import Coherence, continuation_ce, measure, repetition
from steer.steering.generate import build_prompt_ids
from steer.steering.success import greedy_replies
from steer.steering.toward import (
    FILLERS,
    LADDER,
    NEUTRAL_PROMPTS,
    TEMPLATES,
    calibrate,
    concept_tokens,
    concept_words,
    lever_set,
    names_concept,
    toward,
    word_tokens,
)
from steer.steering.vectors import build_vector

LAYER = 2


def promoting_sae(lm, token: str = " Bridge", n_latents: int = 48, planted: int = 7) -> TopKSAE:
    """Random decoder directions, except latent `planted`, whose direction is the token's
    (tied) embedding row: adding it makes the model say that token."""
    (tid,) = lm.tokenizer(token, add_special_tokens=False).input_ids
    torch.manual_seed(1)
    sae = TopKSAE(SAEConfig(lm.d_model, n_latents, 4, hookpoint=f"resid_post.{LAYER}"))
    with torch.no_grad():
        row = lm.model.get_input_embeddings().weight[tid].detach()
        sae.W_dec[planted] = row / row.norm()
    return sae


def test_concept_words_drop_stopwords_and_keep_a_lone_word():
    assert concept_words("Talk about the ocean and its waves") == ["ocean", "waves"]
    assert concept_words("the") == ["the"]


def test_word_tokens_are_word_initial_pieces(tiny_tokenizer):
    ids = word_tokens(tiny_tokenizer, "bridge")
    pieces = {tiny_tokenizer.decode([i]).strip().lower() for i in ids}
    assert ids and pieces <= {"bridge", "bri", "brid", "bridg"}
    assert " Bridge" in [tiny_tokenizer.decode([i]) for i in ids]


def test_concept_tokens_refuse_text_without_words(tiny_tokenizer):
    with pytest.raises(ValueError, match="no concept words"):
        concept_tokens(tiny_tokenizer, "?? !!")


def test_names_concept_matches_word_starts_only():
    assert names_concept("Dogs bark.", ["dog"]) and names_concept("my dog", ["dog"])
    assert not names_concept("hotdog stand", ["dog"])


def test_the_planted_lever_ranks_first(one_thread):
    lm = make_tiny_lm("llama")
    sae = promoting_sae(lm)
    levers = toward(lm, sae, "Bridge", top=3)
    assert levers[0].feature == 7
    assert levers[0].mode == "add" and levers[0].strength > 0
    assert levers[0].rise > levers[1].rise
    assert [lv.score for lv in levers] == sorted((lv.score for lv in levers), reverse=True)


def test_toward_follows_the_concept(one_thread):
    """Same SAE, another word: the planted lever no longer leads."""
    lm = make_tiny_lm("llama")
    sae = promoting_sae(lm)
    assert toward(lm, sae, "Paris", top=3)[0].feature != 7


def test_strength_is_in_max_activation_units(one_thread):
    lm = make_tiny_lm("llama")
    sae = promoting_sae(lm)
    raw = toward(lm, sae, "Bridge", top=1)[0]
    max_acts = torch.full((sae.n_latents,), 4.0)
    rel = toward(lm, sae, "Bridge", top=1, max_acts=max_acts)[0]
    assert rel.feature == raw.feature == 7
    assert rel.strength == pytest.approx(raw.strength / 4.0, abs=2e-3)


def concept_sae(lm, text: str = "Bridge", n_latents: int = 48) -> TopKSAE:
    """Random decoder directions, except three that rebuild the concept's direction v
    (the difference of means --toward starts from) exactly:
    v = (v/2 + n) + (v/2 - n + m) - m, latents 7, 9 and 11 in that order; so 7 and 9
    are the concept's side and 11 (entering with negative weight) the fillers'."""
    v = build_vector(
        lm,
        promoting_sae(lm),
        "v",
        [t.format(text) for t in TEMPLATES],
        [t.format(f) for t in TEMPLATES for f in FILLERS],
    ).direction
    torch.manual_seed(2)
    n, m = torch.linalg.qr(torch.stack([v, torch.randn_like(v), torch.randn_like(v)]).T)[0].T[1:]
    n, m = 0.5 * v.norm() * n, 0.5 * v.norm() * m  # orthogonal to v and to each other
    torch.manual_seed(1)
    sae = TopKSAE(SAEConfig(lm.d_model, n_latents, 4, hookpoint=f"resid_post.{LAYER}"))
    with torch.no_grad():
        for latent, d in ((7, v / 2 + n), (9, v / 2 - n + m), (11, m)):
            sae.W_dec[latent] = d / d.norm()
    return sae


def test_the_set_rebuilds_the_concept_direction_from_its_own_side(one_thread):
    """Planted: the concept's direction is latent 7 + latent 9 - latent 11. The set is
    exactly {7, 9} (11 is the fillers' side), and --toward lists those two."""
    lm = make_tiny_lm("llama")
    sae = concept_sae(lm)
    levers = dict(lever_set(lm, sae, "Bridge", 5))
    assert set(levers) == {7, 9} and min(levers.values()) > 0
    assert {lv.feature for lv in toward(lm, sae, "Bridge")} == {7, 9}


def test_calibration_picks_the_smallest_rung_with_the_most_wins(one_thread, monkeypatch):
    """Brute force: each rung's replies generated one prompt at a time, judged by the
    benchmark's own meters; the calibration (batched, a prompt per row) must agree."""
    from steer.steering import coherence as meter
    from steer.steering.success import coherence

    # The tiny random model answers every prompt with a loop ("\n\n\n…"), steered or
    # not, so the loop check would fail every reply: it is off here, and the
    # cross-entropy bound alone judges coherence.
    monkeypatch.setattr(meter, "MAX_REPETITION", 1.01)
    lm = make_tiny_lm("llama")
    sae = promoting_sae(lm)
    prompts = [build_prompt_ids(lm, p) for p in NEUTRAL_PROMPTS]
    unit = 0.05  # raw units of the planted " Bridge" direction per ladder unit
    rung, rate, ok, texts, unsteered = calibrate(lm, sae, [(7, unit)], prompts, ["bridge"], 8)
    wins = []
    for a in LADDER:
        row = [Intervention(7, unit * a, "add")]
        won = 0
        for p, ids in enumerate(prompts):
            base, steered = greedy_replies(lm, sae, ids, [[], row], 8, stop_on_eos=False)
            assert base.ids == unsteered[p]
            won += names_concept(steered.text, ["bridge"]) and coherence(steered, base).ok
        wins.append(won / len(prompts))
    assert wins[0] < max(wins)  # not trivial: the gentlest rung does not win most
    assert rung == wins.index(max(wins)) and rate == pytest.approx(max(wins)) and ok
    assert len(texts) == len(prompts) and all("Bridge" in t for t in texts)


def test_toward_rejects_empty_text():
    lm = make_tiny_lm("llama")
    with pytest.raises(ValueError, match="empty"):
        toward(lm, promoting_sae(lm), "  ")


# ---------------------------------------------------------------------- coherence
def test_repetition_flags_loops():
    assert repetition(list(range(20))) == 0.0
    assert repetition([5] * 20) > 0.9


def test_cross_entropy_matches_a_plain_forward(one_thread):
    lm = make_tiny_lm("llama")
    prompt = build_prompt_ids(lm, "The Golden Gate")
    reply = lm.tokenizer(" Bridge is a bridge", add_special_tokens=False).input_ids
    (ce,) = continuation_ce(lm, prompt, [reply])
    ids = torch.cat([prompt, torch.tensor(reply)])[None]
    with torch.inference_mode():
        logp = torch.log_softmax(lm.model(ids).logits[0, :-1].float(), dim=-1)
    want = -logp[len(prompt) - 1 :].gather(-1, ids[0, len(prompt) :, None]).mean()
    assert ce == pytest.approx(float(want), abs=1e-4)


def test_meter_compares_with_the_baseline_and_catches_loops(one_thread):
    lm = make_tiny_lm("llama")
    prompt = build_prompt_ids(lm, "Paris is")
    text = lm.tokenizer(" the capital of France, and the Eiffel Tower stands there").input_ids
    loop = [text[0]] * len(text)
    same, looped = measure(lm, prompt, text, [text, loop])
    assert same.ok and same.excess == pytest.approx(0.0, abs=1e-5)
    assert not looped.ok and looped.repeats > 0.9 and "repeated" in looped.describe()
    assert not Coherence(steered=6.0, baseline=2.0).ok
