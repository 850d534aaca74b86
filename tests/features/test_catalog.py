"""Feature catalog: a planted feature is found, statistics, storage, logit lens, search."""

import time

import pytest
import torch
from builders import CATALOG_LAYER, TEXTS, planted_sae
from conftest import make_tiny_lm

from sae import SAEConfig, TopKSAE
from steer.features.catalog import (
    CatalogMismatch,
    FeatureCatalog,
    build_catalog,
    catalog_dir,
    decode_pieces,
    latents_for_text,
    logit_lens,
    token_bytes,
)
from steer.features.catalog.build import _TopContexts

LAYER = CATALOG_LAYER


@pytest.fixture(scope="module")
def lm():
    return make_tiny_lm("llama")


@pytest.fixture(scope="module")
def planted(lm):
    sae = planted_sae(lm)
    catalog = build_catalog(lm, sae, TEXTS, n_tokens=3000, ctx_len=32, batch_size=8, window=(6, 2))
    return sae, catalog


def test_planted_feature_has_the_planted_token_in_its_top_contexts(lm, planted):
    sae, catalog = planted
    entry = catalog.entry(0)
    assert entry.contexts and all(c.tokens[c.max_pos] == " Bridge" for c in entry.contexts)
    assert all(c.acts[c.max_pos] == max(c.acts) > 0 for c in entry.contexts)
    assert [c.max_act for c in entry.contexts] == sorted(
        (c.max_act for c in entry.contexts), reverse=True
    )
    assert "Bridge" in entry.label
    assert entry.max_act == pytest.approx(max(c.max_act for c in entry.contexts), rel=1e-2)
    # " Bridge" is 1 token of the ~20 of its sentence, which is 1 of the 6 sentences.
    assert 0.002 < entry.frequency < 0.02
    assert entry.mean_act > 0


def test_planted_feature_is_found_by_text_and_by_search(lm, planted):
    sae, catalog = planted
    for cat in (None, catalog):
        found = latents_for_text(
            lm, sae, "They crossed the Golden Gate Bridge at dawn.", n=5, catalog=cat
        )
        assert found[0][0] == 0
    assert latents_for_text(lm, sae, "Dogs are loyal animals.", n=64)[0][0] != 0
    assert catalog.search("bridge")[0].index == 0
    assert catalog.search("  ") == []
    with pytest.raises(ValueError, match="the text is empty"):
        latents_for_text(lm, sae, " ")


def test_catalog_saves_beside_the_sae_and_loads_fast(lm, planted, tmp_path):
    sae, catalog = planted
    sae.save(tmp_path / "sae")
    folder = catalog.save(tmp_path / "sae")
    assert folder == catalog_dir(tmp_path / "sae")
    assert FeatureCatalog.exists(tmp_path / "sae") and not FeatureCatalog.exists(tmp_path)
    start = time.perf_counter()
    loaded = FeatureCatalog.load(tmp_path / "sae")
    assert time.perf_counter() - start < 0.5
    assert loaded.matches(sae)
    assert all(loaded.entry(i) == catalog.entry(i) for i in range(sae.n_latents))
    torch.testing.assert_close(loaded.max_acts, catalog.max_acts)
    other = TopKSAE(SAEConfig(lm.d_model, 64, 4, hookpoint="resid_post.2"))
    assert not loaded.matches(other)
    assert FeatureCatalog.for_sae(tmp_path / "sae", sae).n_latents == sae.n_latents
    assert FeatureCatalog.for_sae(tmp_path, sae) is None
    with pytest.raises(CatalogMismatch, match="built for another SAE"):
        FeatureCatalog.for_sae(tmp_path / "sae", other)
    with pytest.raises(ValueError, match="no feature catalog"):
        FeatureCatalog.load(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="feature 64 is out of range"):
        loaded.entry(64)


def test_catalog_from_a_corpus_file(lm, planted, tiny_corpus):
    sae, _ = planted
    seen = []
    catalog = build_catalog(
        lm,
        sae,
        tiny_corpus,
        n_tokens=1024,
        ctx_len=32,
        batch_size=4,
        progress=lambda d, n: seen.append((d, n)),
    )
    assert seen[-1] == (1024, 1024) and len(seen) == 8
    assert catalog.meta["n_tokens"] == 32 * 31  # first position of each context skipped
    assert catalog.frequency[0] > 0


def test_running_top_contexts_equal_brute_force():
    torch.manual_seed(0)
    n, C, B, T, k, skip = 12, 3, 5, 10, 3, 1
    before, after = 2, 1
    top = _TopContexts(n, C, before, after)
    all_ids, all_dense = [], []
    for _ in range(4):
        ids = torch.randint(0, 50, (B, T))
        pre = torch.rand(B, T - skip, n) * (torch.rand(B, T - skip, n) > 0.5)
        acts, idx = pre.topk(k, dim=-1)
        top.update(ids, acts, idx, skip)
        dense = torch.zeros(B, T, n)
        dense[:, skip:].scatter_(-1, idx, acts)
        all_ids.append(ids)
        all_dense.append(dense)
    ids, dense = torch.cat(all_ids), torch.cat(all_dense)  # (N, T), (N, T, n)
    per_ctx, pos = dense.max(dim=1)  # (N, n)
    for latent in range(n):
        vals, ctx = per_ctx[:, latent].topk(C)
        torch.testing.assert_close(top.values[latent], vals)
        for slot in range(C):
            c, p = int(ctx[slot]), int(pos[ctx[slot], latent])
            window = range(p - before, p + after + 1)
            tokens = [int(ids[c, q]) if 0 <= q < T else -1 for q in window]
            acts = [float(dense[c, q, latent]) if 0 <= q < T else 0.0 for q in window]
            assert top.tokens[latent, slot].tolist() == tokens
            torch.testing.assert_close(top.acts[latent, slot], torch.tensor(acts))


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_logit_lens_uses_the_norm_weight_and_centering(family):
    lm = make_tiny_lm(family)
    with torch.no_grad():
        lm.final_norm.weight.uniform_(0.5, 1.5)
    v = torch.randn(3, lm.d_model)
    top, bottom = logit_lens(lm, v, n=5, fast=False)
    expected = v - v.mean(-1, keepdim=True) if family == "gpt2" else v  # LayerNorm centres
    logits = (expected * lm.final_norm.weight.detach()) @ lm.unembed.weight.detach().T
    assert top.tolist() == logits.topk(5).indices.tolist()
    assert bottom.tolist() == logits.topk(5, largest=False).indices.tolist()


def test_token_windows_keep_split_characters_whole(tiny_tokenizer):
    ids = tiny_tokenizer("a – é 東", add_special_tokens=False).input_ids
    pieces = token_bytes(tiny_tokenizer, ids)
    assert b"".join(pieces).decode() == "a – é 東"
    texts = decode_pieces(pieces)
    assert "".join(texts) == "a – é 東" and len(texts) == len(ids)
    assert decode_pieces([b"\xc3", b"\xa9", b"!"]) == ["", "é", "!"]
    assert decode_pieces([b"\xa9", b"a"]) == ["\ufffd", "a"]  # a window starting mid-character
    assert token_bytes(tiny_tokenizer, [2]) == [b"<|im_end|>"]
