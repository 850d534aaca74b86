"""Steering hook: clamp / add / ablate math, positions with the KV cache, validation."""

import pytest
import torch
from conftest import make_tiny_lm

from sae import SAEConfig, TopKSAE
from steer.features.catalog import logit_lens
from steer.steering import Intervention, SteeringHook, parse_feature, strength_scales

LAYER = 2


def make_sae(lm, n_latents=64, k=8, seed=0, hookpoint=f"resid_post.{LAYER}", input_scale=1.0):
    torch.manual_seed(seed)
    sae = TopKSAE(SAEConfig(lm.d_model, n_latents, k, input_scale=input_scale, hookpoint=hookpoint))
    with torch.no_grad():
        sae.b_enc.fill_(0.01)  # most latents fire a little, so TopK really selects
    return sae


@pytest.fixture
def lm():
    return make_tiny_lm("llama")


@pytest.fixture
def ids(tiny_tokenizer):
    return tiny_tokenizer(
        "The Golden Gate Bridge is a suspension bridge.", return_tensors="pt"
    ).input_ids


def logits_with(lm, ids, hook=None):
    with torch.inference_mode():
        if hook is None:
            return lm.model(ids).logits
        with hook.reset(0):
            return lm.model(ids).logits


def test_clamp_keeps_the_error_term(lm, ids):
    """x' = SAE(x with z_i := v) + (x - SAE(x)): the formula touches only the edited rows."""
    sae = make_sae(lm, input_scale=3.0)
    with torch.inference_mode():
        x = lm.residual(ids, LAYER)  # (1, T, d)
        top_acts, top_idx = sae.encode(x[0])
        z = torch.zeros(x.shape[1], sae.n_latents).scatter(1, top_idx, top_acts)  # (T, n)
        active = int(z.gt(0).sum(0).argmax())
        inactive = int(z.gt(0).sum(0).argmin())
        for ivs in (
            [Intervention(active, 2.5)],
            [Intervention(active, 0, "ablate"), Intervention(inactive, 1.5)],
        ):
            hook = SteeringHook(lm, sae, [ivs], encode_dtype=None)
            edited = hook.edit(x, 0)[0]
            z_new = z.clone()
            for iv in ivs:
                z_new[:, iv.latent] = 0.0 if iv.mode == "ablate" else iv.strength
            x_hat_new = sae.decode(z_new, torch.arange(sae.n_latents).expand(len(z_new), -1))
            x_hat = sae.decode(top_acts, top_idx)
            torch.testing.assert_close(edited, x_hat_new + (x[0] - x_hat), atol=1e-5, rtol=1e-5)


def test_clamp_to_own_activation_leaves_logits_unchanged(lm, ids):
    """Token by token with the KV cache, clamp each position's strongest latent to its
    own activation: the error term is kept, so the logits do not move."""
    sae = make_sae(lm)
    with torch.inference_mode():
        clean = lm.model(ids).logits[0]  # (T, V)
        x = lm.residual(ids, LAYER)[0]
        top_acts, top_idx = sae.encode(x)
        cache = None
        for t in range(ids.shape[1]):
            j = int(top_acts[t].argmax())
            for encode_dtype in (None, "auto"):
                hook = SteeringHook(
                    lm,
                    sae,
                    [[Intervention(int(top_idx[t, j]), float(top_acts[t, j]))]],
                    encode_dtype=encode_dtype,
                )
                assert torch.allclose(
                    hook.edit(x[None, t : t + 1], t), x[None, t : t + 1], atol=1e-5
                )
            hook = SteeringHook(
                lm,
                sae,
                [[Intervention(int(top_idx[t, j]), float(top_acts[t, j]))]],
                encode_dtype=None,
            )
            with hook.reset(t):
                out = lm.model(ids[:, t : t + 1], past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            torch.testing.assert_close(out.logits[0, -1], clean[t], atol=1e-5, rtol=1e-4)


def test_ablating_an_inactive_latent_changes_nothing(lm, ids):
    sae = make_sae(lm)
    with torch.inference_mode():
        x = lm.residual(ids, LAYER)[0]
        fired = torch.zeros(sae.n_latents, dtype=torch.bool)
        fired[sae.encode(x).top_indices.flatten()] = True
    never = int((~fired).nonzero()[0])
    torch.testing.assert_close(
        logits_with(lm, ids, SteeringHook(lm, sae, [Intervention(never, 0, "ablate")])),
        logits_with(lm, ids),
    )


def test_fast_encode_matches_exact_encode(lm, ids):
    sae = make_sae(lm, n_latents=256)
    with torch.inference_mode():
        x = lm.residual(ids, LAYER)
    ivs = [Intervention(i, 3.0) for i in range(0, 256, 7)]
    exact = SteeringHook(lm, sae, [ivs], encode_dtype=None).edit(x, 0)
    fast = SteeringHook(lm, sae, [ivs], encode_dtype=torch.bfloat16).edit(x, 0)
    torch.testing.assert_close(fast, exact, atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("mode", ["clamp", "add"])
def test_steering_moves_next_token_toward_logit_lens_tokens(lm, ids, mode):
    with torch.no_grad():  # a random tiny model predicts ~uniformly: sharpen its (tied) unembedding
        lm.unembed.weight.mul_(50)
    sae = make_sae(lm)
    latent = 5
    top, bottom = logit_lens(lm, sae.decoder_directions([latent]), n=10, fast=False)
    clean = logits_with(lm, ids)[0, -1]  # (V,)
    with torch.inference_mode():
        scale = float(lm.residual(ids, LAYER).norm(dim=-1).mean())
    hook = SteeringHook(lm, sae, [Intervention(latent, 10 * scale, mode)])
    steered = logits_with(lm, ids, hook)[0, -1]
    delta = steered - clean
    assert delta[top[0]].mean() > delta[bottom[0]].mean() + 10.0
    assert int(steered.argmax()) in top[0].tolist()
    mass = lambda logits: float(torch.softmax(logits, -1)[top[0]].sum())  # noqa: E731
    assert mass(steered) > 0.5 > mass(clean)


def test_positions_generated_leaves_prompt_logits_untouched(lm, ids):
    sae = make_sae(lm)
    P = ids.shape[1]
    clean = logits_with(lm, ids)[0]
    for mode in ("clamp", "add"):
        hook = SteeringHook(
            lm, sae, [Intervention(3, 10.0, mode)], positions="generated", prompt_len=P
        )
        steered = logits_with(lm, ids, hook)[0]
        torch.testing.assert_close(steered[: P - 1], clean[: P - 1])  # predict prompt tokens
        assert not torch.allclose(steered[P - 1], clean[P - 1])  # predicts the first new token


@pytest.mark.parametrize("positions", ["all", "prompt", "generated"])
def test_positions_work_with_the_kv_cache(lm, ids, positions):
    """Prefill + one token at a time through the cache == one full forward."""
    sae = make_sae(lm)
    P = 6
    ivs = [Intervention(3, 4.0, "clamp"), Intervention(9, -2.0, "add")]
    hook = SteeringHook(lm, sae, [ivs], positions=positions, prompt_len=P)
    full = logits_with(lm, ids, hook)[0]
    with torch.inference_mode(), hook.reset(0):
        out = lm.model(ids[:, :P], use_cache=True)
        steps = [out.logits[0]]
        for t in range(P, ids.shape[1]):
            out = lm.model(ids[:, t : t + 1], past_key_values=out.past_key_values, use_cache=True)
            steps.append(out.logits[0])
    torch.testing.assert_close(torch.cat(steps), full, atol=1e-4, rtol=1e-4)
    clean = logits_with(lm, ids)[0]
    if positions == "prompt":  # the residual of generated positions is never edited
        with torch.inference_mode():
            x = lm.residual(ids, LAYER)
        torch.testing.assert_close(hook.edit(x, 0)[0, P:], x[0, P:])
    assert not torch.allclose(full, clean)


def test_rows_are_steered_independently(lm, ids):
    sae = make_sae(lm)
    batch = ids.expand(3, -1)
    rows = [
        [],
        [Intervention(3, 8.0, "add")],
        [Intervention(3, 8.0, "add"), Intervention(3, 8.0, "add", enabled=False)],
    ]
    out = logits_with(lm, batch, SteeringHook(lm, sae, rows))
    torch.testing.assert_close(out[0], logits_with(lm, ids)[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out[1], out[2])
    torch.testing.assert_close(
        out[1], logits_with(lm, ids, SteeringHook(lm, sae, [rows[1]]))[0], atol=1e-5, rtol=1e-4
    )


def test_relative_strengths_use_max_activations(lm, ids):
    sae = make_sae(lm)
    max_acts = torch.zeros(sae.n_latents)
    max_acts[3], max_acts[4], max_acts[5] = 3.0, 2.0, 4.0  # latent 7 never fired: median of live
    with torch.inference_mode():
        x = lm.residual(ids, LAYER)
    rel = SteeringHook(
        lm, sae, [Intervention(3, 2.0, "add"), Intervention(7, 1.0)], max_acts=max_acts
    )
    raw = SteeringHook(lm, sae, [Intervention(3, 6.0, "add"), Intervention(7, 3.0)])
    torch.testing.assert_close(rel.edit(x, 0), raw.edit(x, 0))
    assert strength_scales([3, 7], None).tolist() == [1.0, 1.0]


def test_validation_errors_are_one_line(lm):
    sae = make_sae(lm)
    with pytest.raises(
        ValueError, match=r"^feature 99999 is out of range: the SAE has 64 latents \(0\.\.63\)$"
    ):
        SteeringHook(lm, sae, [Intervention(99999, 1.0)])
    with pytest.raises(ValueError, match="unknown steering mode 'boost'"):
        Intervention(1, 1.0, "boost")
    wrong = TopKSAE(SAEConfig(16, 32, 4, hookpoint="resid_post.1"))
    with pytest.raises(ValueError, match="does not fit tiny-llama: it reads d_in=16 .* d_model=32"):
        SteeringHook(lm, wrong, [Intervention(1, 1.0)])
    with pytest.raises(ValueError, match="out of range"):
        SteeringHook(lm, make_sae(lm, hookpoint="resid_post.9"), [Intervention(1, 1.0)])


def test_intervention_round_trip_and_parsing():
    iv = Intervention(12, -4.5, "add", enabled=False)
    assert Intervention.from_dict(iv.to_dict()) == iv
    assert parse_feature("1234=10") == Intervention(1234, 10.0, "clamp")
    assert parse_feature("77=-4:add") == Intervention(77, -4.0, "add")
    assert parse_feature("5", mode="ablate") == Intervention(5, 0.0, "ablate")
    assert parse_feature("5:ablate").mode == "ablate"
    for bad in ("x=1", "5", "5=abc", "5=1:boost"):
        with pytest.raises(ValueError):
            parse_feature(bad)
    with pytest.raises(ValueError, match="unknown intervention keys"):
        Intervention.from_dict({"latent": 1, "power": 3})
