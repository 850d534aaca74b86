"""steer.evals.evaluate on a tiny random model: metrics against SAEs whose answer is known."""

import math

import pytest
import torch
import torch.nn.functional as F

from sae import SAEConfig, TopKSAE
from steer.evals.evaluate import EvalConfig, evaluate_saes, find_sae_dirs, save_density_histogram

D = 32  # tiny_lm's d_model
LAYER = 1
CFG = EvalConfig(tokens=10_000, batch_contexts=3, autocast=False)


def contexts(n=7, t=12, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 300, (t,), generator=gen) for _ in range(n)]


def identity_sae() -> TopKSAE:
    """Latents ±e_i with k = d: ReLU keeps exactly the positive part of x and of -x, so
    decoding gives x back exactly (a perfect SAE)."""
    sae = TopKSAE(SAEConfig(D, 2 * D, D))
    eye = torch.eye(D)
    with torch.no_grad():
        sae.W_dec.copy_(torch.cat([eye, -eye]))
        sae.W_enc.copy_(torch.cat([eye, -eye]))
        sae.b_enc.zero_()
        sae.b_pre.zero_()
    return sae


def zero_sae() -> TopKSAE:
    sae = TopKSAE(SAEConfig(D, 64, 4))
    with torch.no_grad():
        sae.W_dec.zero_()
        sae.b_pre.zero_()
    return sae


def test_perfect_and_zero_saes_bracket_the_metrics(tiny_lm):
    torch.manual_seed(0)
    saes = {"perfect": identity_sae(), "zero": zero_sae(), "random": TopKSAE(SAEConfig(D, 64, 4))}
    res = evaluate_saes(tiny_lm, saes, LAYER, contexts(), CFG)
    perfect, zero, random = res["perfect"], res["zero"], res["random"]
    assert perfect["tokens"] == 7 * 11
    assert perfect["fvu"] < 1e-8
    assert abs(perfect["delta_loss"]) < 1e-5 and perfect["kl"] < 1e-6
    assert perfect["loss_recovered"] == pytest.approx(1.0, abs=1e-3)
    assert zero["ce_sae"] == pytest.approx(zero["ce_zero"], abs=1e-6)
    assert zero["loss_recovered"] == pytest.approx(0.0, abs=1e-4)
    assert zero["fvu"] > 1.0  # predicting 0 is worse than predicting the mean
    assert 0 < random["l0"] <= 4 and math.isfinite(random["kl"])
    assert random["frequencies"].shape == (64,)
    assert random["dead_frac"] == pytest.approx(float((random["frequencies"] == 0).float().mean()))


def test_clean_loss_and_fvu_match_direct_computation(tiny_lm):
    torch.manual_seed(1)
    sae = TopKSAE(SAEConfig(D, 96, 8))
    ctx = contexts(n=5, t=10, seed=3)
    res = evaluate_saes(tiny_lm, {"s": sae}, LAYER, ctx, CFG)["s"]
    ids = torch.stack(ctx)
    with torch.no_grad():
        logits = tiny_lm.model(ids).logits
        logp = F.log_softmax(logits[:, 1:-1].float(), -1)  # predictions from positions 1..T-2
        ce_clean = -logp.gather(-1, ids[:, 2:, None]).mean()
        x = tiny_lm.residual(ids, LAYER)[:, 1:].reshape(-1, D)
        x_hat = sae.decode(*sae.encode(x))
        fvu = (x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
    assert res["ce_clean"] == pytest.approx(float(ce_clean), rel=1e-5)
    assert res["fvu"] == pytest.approx(float(fvu), rel=1e-4)
    assert res["delta_loss"] == pytest.approx(res["ce_sae"] - res["ce_clean"])


def test_token_budget_limits_the_contexts_read(tiny_lm):
    cfg = EvalConfig(tokens=20, batch_contexts=2, autocast=False)
    res = evaluate_saes(tiny_lm, {"s": zero_sae()}, LAYER, contexts(n=10, t=12), cfg)
    assert res["s"]["tokens"] == 2 * 11  # 2 contexts cover the 20 tokens asked for


def test_sae_of_another_width_is_a_clear_error(tiny_lm):
    with pytest.raises(ValueError, match="d_in=16 .* d_model=32"):
        evaluate_saes(tiny_lm, {"s": TopKSAE(SAEConfig(16, 32, 4))}, LAYER, contexts(), CFG)


def test_density_histogram_is_a_png(tmp_path):
    freqs = {"a": torch.tensor([0.0, 1e-3, 0.5, 0.02]), "b": torch.tensor([0.1, 0.0])}
    path = save_density_histogram(freqs, tmp_path / "sub" / "hist.png", tokens=1000)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_find_sae_dirs_in_a_run_folder(tmp_path):
    for name in ("64-k4", "128-k4"):
        TopKSAE(SAEConfig(D, int(name.split("-")[0]), 4)).save(tmp_path / name)
    (tmp_path / "train_state").mkdir()
    assert sorted(find_sae_dirs(tmp_path)) == ["128-k4", "64-k4"]
    assert list(find_sae_dirs(tmp_path / "64-k4")) == ["64-k4"]
    with pytest.raises(ValueError, match="no SAE checkpoint"):
        find_sae_dirs(tmp_path / "missing")
    with pytest.raises(ValueError, match="holds no SAE checkpoint"):
        find_sae_dirs(tmp_path / "train_state")


def spliced_log_probs(lm, ids, layer, keep, replacement, skip):
    """Next-token log-probs (B, T'-1, vocab) of a plain forward whose residual after
    `layer` is replaced by `replacement` at the kept positions (None: clean)."""

    def hook(_m, _a, output):
        resid = (output[0] if isinstance(output, tuple) else output).clone()
        if replacement is not None:
            resid[:, skip:][keep] = replacement
        return (resid, *output[1:]) if isinstance(output, tuple) else resid

    handle = lm.block(layer).register_forward_hook(hook)
    try:
        logits = lm.model(ids).logits[:, skip:-1]  # (B, T'-1, vocab)
    finally:
        handle.remove()
    return F.log_softmax(logits.float(), -1)


@torch.no_grad()
def brute_force_eval(lm, saes, layer, ctx, batch, skip=1, outlier=10.0):
    """The definitions, one plain forward per variant and batch: a hook at `layer`
    splices in zeros or x_hat, whole-vocab fp32 softmaxes give CE and KL."""
    out = {n: {"err": 0.0, "ce": 0.0, "kl": 0.0, "l0": 0.0} for n in saes}
    xs, ce_clean, ce_zero, n_preds = [], 0.0, 0.0, 0
    for start in range(0, len(ctx), batch):
        ids = torch.stack(ctx[start : start + batch])  # (B, T)
        x = lm.residual(ids, layer)[:, skip:]  # (B, T', d)
        norms = x.norm(dim=-1)
        keep = norms <= outlier * norms.median()  # (B, T')
        xs.append(x[keep])

        targets = ids[:, skip + 1 :, None]
        logp_clean = spliced_log_probs(lm, ids, layer, keep, None, skip)
        zero = spliced_log_probs(lm, ids, layer, keep, torch.zeros(()), skip)
        ce_clean -= float(logp_clean.gather(-1, targets).sum())
        ce_zero -= float(zero.gather(-1, targets).sum())
        n_preds += targets.numel()
        for name, sae in saes.items():
            acts, idx = sae.encode(x[keep])
            x_hat = sae.decode(acts, idx)
            logp = spliced_log_probs(lm, ids, layer, keep, x_hat, skip)
            o = out[name]
            o["err"] += float((x[keep] - x_hat).pow(2).sum())
            o["l0"] += float((acts > 0).sum())
            o["ce"] -= float(logp.gather(-1, targets).sum())
            kl = F.kl_div(logp, logp_clean, log_target=True, reduction="sum")
            o["kl"] += float(kl)
    x = torch.cat(xs)
    total_var = float((x - x.mean(0)).pow(2).sum())
    res = {}
    for name, o in out.items():
        ce_sae = o["ce"] / n_preds
        res[name] = {
            "fvu": o["err"] / total_var,
            "l0": o["l0"] / len(x),
            "ce_clean": ce_clean / n_preds,
            "ce_zero": ce_zero / n_preds,
            "ce_sae": ce_sae,
            "kl": o["kl"] / n_preds,
            "tokens": len(x),
        }
    return res


@pytest.mark.parametrize(
    "family, attention",
    [("llama", "sdpa"), ("llama", "eager"), ("gpt2", "eager"), ("gpt_neox", "eager")],
)
def test_metrics_match_one_forward_per_variant(family, attention, monkeypatch, one_thread):
    """The eval runs blocks 0..L once and the softmaxes a few positions at a time: its
    metrics are those of the plain definitions (a separate forward per variant). Eager
    attention hands the later blocks a (B, 1, T, T) mask, which must be stacked too."""
    from conftest import make_tiny_lm

    import steer.evals.evaluate as ev

    lm = make_tiny_lm(family)
    lm.model.set_attn_implementation(attention)
    vocab = lm.unembed.weight.shape[0]
    monkeypatch.setattr(ev, "CHUNK_BYTES", 4 * 5 * vocab * 3)  # 3 positions per step
    torch.manual_seed(2)
    saes = {"a": TopKSAE(SAEConfig(D, 64, 4)), "b": TopKSAE(SAEConfig(D, 96, 8)), "z": zero_sae()}
    ctx = contexts(n=7, t=12, seed=5)
    cfg = EvalConfig(tokens=10_000, batch_contexts=3, autocast=False)
    got = evaluate_saes(lm, saes, LAYER, ctx, cfg)
    want = brute_force_eval(lm, saes, LAYER, ctx, batch=3)
    for name in saes:
        for key, value in want[name].items():
            assert got[name][key] == pytest.approx(value, rel=1e-5, abs=1e-7), (name, key)
    assert got["z"]["ce_sae"] == pytest.approx(got["z"]["ce_zero"], rel=1e-6)


@pytest.mark.parametrize("autocast", [True, False])
def test_lm_head_computes_what_the_model_computes(tiny_lm, autocast):
    """The eval casts a Linear head's weight to bf16 once: logits are bit for bit those
    of the head under autocast (and of the plain head without it)."""
    from steer.evals.evaluate import _autocast, lm_head

    h = torch.randn(3, 5, D)
    with torch.inference_mode(), _autocast(tiny_lm, autocast):
        want = tiny_lm.unembed(h)
    with torch.inference_mode():
        got = lm_head(tiny_lm, autocast)(h)
    assert got.dtype == (torch.bfloat16 if autocast else torch.float32)
    assert torch.equal(got, want)
