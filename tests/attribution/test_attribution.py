"""Attribution checked against brute force on tiny models.

Exact regime: the SAE reads the last block and the final norm is the identity, so the
metric is linear in that block's output at the read position: attribution patching must
equal exact ablation for every latent, and the error node must equal removing the error.
Near-linear regime: a mid-depth SAE whose decoder writes tiny vectors, so ablating a latent
is a small step: attribution must match ablation to first order.
"""

import pytest
import torch
from builders import planted_sae
from conftest import make_tiny_lm
from torch import nn

from sae import SAEConfig, TopKSAE
from steer.attribution import (
    ablation_effects,
    attribute,
    drop_effects,
    error_effect,
    input_attribution,
    input_attributions,
    resolve_target,
)
from steer.attribution.patching import residual_gradient
from steer.steering import Intervention, SteeringHook

TEXT = "The Golden Gate Bridge is a suspension bridge in San Francisco."


def make_sae(lm, layer, n_latents=64, k=6, seed=0, input_scale=1.0, dtype=torch.float32):
    torch.manual_seed(seed)
    cfg = SAEConfig(
        lm.d_model, n_latents, k, input_scale=input_scale, hookpoint=f"resid_post.{layer}"
    )
    sae = TopKSAE(cfg, dtype=dtype)
    with torch.no_grad():
        sae.b_enc.fill_(0.05)  # most latents fire, so TopK really selects
        sae.b_pre.normal_(0, 0.1)  # a decoder bias, so the bias is not confused with a node
    return sae


@pytest.fixture
def ids(tiny_tokenizer):
    return torch.tensor(tiny_tokenizer(TEXT).input_ids)


@pytest.fixture
def linear_setup(one_thread):
    """Llama with its final norm removed, SAE on the last block: m is linear in x there."""
    lm = make_tiny_lm("llama", n_layers=2)
    lm.model.model.norm = nn.Identity()
    return lm, make_sae(lm, layer=1, input_scale=2.0)


def totals_of(attr, latents):
    t = attr.totals()
    return torch.tensor([float(t[i]) for i in latents])


def test_linear_regime_attribution_equals_exact_ablation(linear_setup, ids, tiny_tokenizer):
    lm, sae = linear_setup
    target = resolve_target(tiny_tokenizer, ids, position=8, contrast=" the")
    attr = attribute(lm, sae, ids, target)
    latents = attr.latents.unique().tolist()
    assert len(latents) > 10
    exact = ablation_effects(lm, sae, ids, target, latents, batch=7)
    torch.testing.assert_close(totals_of(attr, latents), exact.float(), atol=1e-6, rtol=1e-3)
    # Only the read position can move the metric; latents elsewhere score exactly 0.
    assert attr.scores[attr.positions != target.read_at].abs().max() == 0
    assert attr.scores[attr.positions == target.read_at].abs().max() > 1e-3
    # The error node is what removing the error does.
    assert error_effect(lm, sae, ids, target) == pytest.approx(attr.error_total, abs=1e-6)
    # Completeness: features + error + the decoder bias's share give back the metric.
    _, _, g = residual_gradient(lm, sae, ids, target)
    bias = float((g[attr.first :] @ (sae.b_pre / sae.cfg.input_scale).detach()).sum())
    m_first = attr.metric  # every position >= first is the read position or has no effect
    assert attr.features_total + attr.error_total + bias == pytest.approx(m_first, abs=1e-5)
    # Integrated gradients are the same thing when m is linear.
    ig = attribute(lm, sae, ids, target, method="ig", steps=4)
    torch.testing.assert_close(ig.scores, attr.scores, atol=1e-6, rtol=1e-3)


def test_levers_are_applied_before_attribution_and_its_check(linear_setup, ids, tiny_tokenizer):
    lm, sae = linear_setup
    target = resolve_target(tiny_tokenizer, ids, position=8)
    plain = attribute(lm, sae, ids, target)
    victim = int(plain.latents[plain.positions == target.read_at][0])
    levers = SteeringHook(lm, sae, [Intervention(victim, 0.0, "ablate"), Intervention(3, 4.0)])
    steered = attribute(lm, sae, ids, target, levers=levers)
    assert steered.metric != pytest.approx(plain.metric)
    assert victim not in steered.latents[steered.positions == target.read_at].tolist()
    latents = steered.latents.unique().tolist()
    exact = ablation_effects(lm, sae, ids, target, latents, levers=levers)
    torch.testing.assert_close(totals_of(steered, latents), exact.float(), atol=1e-6, rtol=1e-3)


def test_near_linear_regime_matches_ablation_to_first_order(ids, tiny_tokenizer, one_thread):
    """Mid-depth SAE, every later block and the final norm at work, tiny decoder writes."""
    lm = make_tiny_lm("llama", n_layers=4)
    lm.model.double()
    sae = make_sae(lm, layer=1, dtype=torch.float64)
    with torch.no_grad():
        sae.W_dec.mul_(1e-3)
    target = resolve_target(tiny_tokenizer, ids, position=10)
    attr = attribute(lm, sae, ids, target)
    top = [s.latent for s in attr.top(15)]
    exact = ablation_effects(lm, sae, ids, target, top)
    est = totals_of(attr, top).double()
    assert est.abs().min() > 1e-6
    torch.testing.assert_close(est, exact, rtol=2e-2, atol=1e-7)
    # Ranks agree exactly at this scale.
    assert est.abs().argsort().tolist() == exact.abs().argsort().tolist()


def test_input_attribution_finds_the_token_a_planted_latent_reads(one_thread):
    lm = make_tiny_lm("llama")
    sae = planted_sae(lm, " Bridge")  # latent 0 fires on " Bridge" only
    ids = torch.tensor(lm.tokenizer(TEXT).input_ids)
    (bridge,) = lm.tokenizer(" Bridge", add_special_tokens=False).input_ids
    q = ids.tolist().index(bridge)
    out = input_attribution(lm, sae, ids, 0, q, check=2)
    assert out.act > 0
    assert out.top(1)[0][0] == q  # the token itself drives it
    assert set(out.drops) and q not in out.drops
    # The planted latent sees nothing else: dropping another token leaves it almost whole.
    assert all(abs(d) < 0.5 * out.act for d in out.drops.values())


def test_gradient_times_embedding_is_the_derivative_of_scaling_a_token(ids, one_thread):
    lm = make_tiny_lm("llama")
    lm.model.double()
    sae = make_sae(lm, layer=2, dtype=torch.float64)
    acts = input_attribution(lm, sae, ids, 0, 9, check=0)
    latent = 0
    if acts.act == 0:  # pick a latent that is live at the position
        from steer.attribution.inputs import _pre_act

        with torch.no_grad():
            x = lm.residual(ids[None, :10], 2)[0, -1]
        latent = int(torch.stack([_pre_act(sae, x, j) for j in range(64)]).argmax())
        acts = input_attribution(lm, sae, ids, latent, 9, check=0)
    emb = lm.model.get_input_embeddings()
    eps = 1e-3  # smaller steps meet float32 rounding inside the model (RoPE tables)
    for t in (int(acts.scores.abs().argmax()), 4):
        factor = torch.ones(1, 10, 1, dtype=torch.float64)
        factor[0, t] = 1 - eps
        handle = emb.register_forward_hook(lambda _m, _a, out, f=factor: out * f)
        try:
            scaled = input_attribution(lm, sae, ids, latent, 9, check=0).act
        finally:
            handle.remove()
        assert (acts.act - scaled) / eps == pytest.approx(float(acts.scores[t]), rel=1e-2)


def test_drop_effects_are_brute_force(ids, one_thread):
    lm = make_tiny_lm("llama")
    lm.model.double()
    sae = make_sae(lm, layer=2, dtype=torch.float64)
    out = input_attribution(lm, sae, ids, 5, 7, check=3)
    for t, effect in out.drops.items():
        kept = torch.cat([ids[:t], ids[t + 1 : 8]])
        less = input_attribution(lm, sae, kept, 5, len(kept) - 1, check=0).act
        assert effect == pytest.approx(out.act - less, abs=1e-9)
    assert drop_effects(lm, sae, ids[:8], 5, []) == []


def test_bad_targets_say_what_is_wrong(tiny_tokenizer, ids):
    with pytest.raises(ValueError, match="out of range"):
        resolve_target(tiny_tokenizer, ids, position=len(ids) + 1)
    with pytest.raises(ValueError, match="out of range"):
        resolve_target(tiny_tokenizer, ids, position=0)
    with pytest.raises(ValueError, match="give a target"):
        resolve_target(tiny_tokenizer, ids)
    with pytest.raises(ValueError, match="tokens"):
        resolve_target(tiny_tokenizer, ids, target=" suspension bridge")
    with pytest.raises(ValueError, match="contrast"):
        resolve_target(tiny_tokenizer, ids, target=" Bridge", contrast=" Bridge")
    t = resolve_target(tiny_tokenizer, ids, position=-1, contrast="#3")
    assert (t.read_at, t.token, t.contrast) == (len(ids) - 2, int(ids[-1]), 3)
    with pytest.raises(ValueError, match="method"):
        attribute(make_tiny_lm("llama"), make_sae(make_tiny_lm("llama"), 1), ids, t, method="x")


def test_batched_input_attributions_equal_one_at_a_time(ids, one_thread):
    lm = make_tiny_lm("llama")
    sae = make_sae(lm, layer=2)
    pairs = [(5, 7), (9, 3), (5, 11)]
    for method in ("linear", "ig"):
        batched = input_attributions(lm, sae, ids, pairs, method=method, steps=3, check=0)
        for (latent, q), b in zip(pairs, batched, strict=True):
            one = input_attribution(lm, sae, ids[: q + 1], latent, q, method=method, steps=3)
            assert b.act == pytest.approx(one.act, abs=1e-6)
            torch.testing.assert_close(b.scores, one.scores, atol=1e-6, rtol=1e-4)
