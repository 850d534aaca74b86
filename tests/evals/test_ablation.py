"""Ablation sparsity: a latent whose ablation moves one logit scores 1; m logits, m."""

import types

import pytest
import torch
from torch import nn

from sae import SAEConfig, TopKSAE
from steer.evals.ablation import ablation_sparsity, effect_sparsity

D, V = 8, 16


class ToyLM:
    """Embedding -> one block (identity) -> linear unembedding; positions never mix, so
    an edit at position t moves the logits at t only."""

    def __init__(self, unembed: torch.Tensor):
        self.embed = nn.Embedding(V, D)
        with torch.no_grad():
            self.embed.weight.copy_(torch.rand(V, D) + 0.5)  # every coordinate positive
        self.blocks = nn.ModuleList([nn.Identity()])
        self.dtype, self.device = torch.float32, torch.device("cpu")

        def forward(input_ids, use_cache=False):
            resid = self.blocks[0](self.embed(input_ids))  # (B, T, D)
            return types.SimpleNamespace(logits=resid @ unembed.T)  # (B, T, V)

        self.model = forward

    def block(self, layer):
        return self.blocks[layer]


def test_effect_sparsity_counts_the_logits_moved():
    delta = torch.zeros(2, 3, 10)
    delta[0, 1, 4] = 2.0  # one logit
    delta[1, :, :5] = 1.0  # five logits at three positions... each shifted against the median
    delta[1] += 7.0  # a constant shift changes no probability
    s = effect_sparsity(delta)
    assert s[0] == pytest.approx(1.0)
    assert s[1] == pytest.approx(15.0)
    assert torch.isnan(effect_sparsity(torch.zeros(1, 2, 5)))[0]


def test_a_latent_whose_ablation_touches_one_logit():
    unembed = torch.zeros(V, D)
    unembed[3, 0] = 2.0  # latent 0's direction (e_0) reaches logit 3 only
    unembed[4:8, 1] = 1.0  # latent 1's direction reaches logits 4..7 alike
    lm = ToyLM(unembed)
    sae = TopKSAE(SAEConfig(d_in=D, n_latents=D, k=1))
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(D))
        sae.W_dec.copy_(torch.eye(D))
        sae.b_enc.zero_()
        sae.b_pre.zero_()
    ids = torch.randint(0, V, (3, 12), generator=torch.Generator().manual_seed(0))
    # k = 1: the one active latent at each position is the largest coordinate; make it 0.
    with torch.no_grad():
        lm.embed.weight[:, 0] += 10
    one = ablation_sparsity(lm, sae, 0, ids, positions=3, horizon=4)
    assert one["sparsity"] == pytest.approx(1.0) and one["ablations"] == 9
    assert one["fraction"] == pytest.approx(1 / (4 * V)) and one["vocab"] == V
    with torch.no_grad():
        lm.embed.weight[:, 0] -= 10
        lm.embed.weight[:, 1] += 10  # now latent 1 is the active one
    assert ablation_sparsity(lm, sae, 0, ids, positions=3, horizon=4)["sparsity"] == (
        pytest.approx(4.0)
    )


def test_on_a_tiny_llama_effects_spread_over_later_positions(one_thread):
    from builders import make_tiny_sae
    from conftest import make_tiny_lm

    lm = make_tiny_lm("llama")
    sae = make_tiny_sae()  # reads block 1
    ids = torch.randint(3, 300, (2, 14), generator=torch.Generator().manual_seed(0))
    out = ablation_sparsity(lm, sae, 1, ids, positions=2, horizon=4)
    vocab = out["vocab"]
    assert out["ablations"] > 0 and 1.0 < out["sparsity"] <= 4 * vocab
    with pytest.raises(ValueError, match="horizon"):
        ablation_sparsity(lm, sae, 1, ids[:, :4], horizon=4)
