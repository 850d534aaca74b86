"""N2G patterns: planted firing rules are recovered; scoring matches brute force."""

import pytest
import torch

from steer.features.explain.n2g import (
    ANY,
    START,
    Examples,
    Patterns,
    firing_events,
    fit_patterns,
    score_patterns,
)

V = 40  # vocabulary of the synthetic text


def planted_text(seed: int, B: int = 256, T: int = 64):
    """Random tokens, and TopK codes (B, T, k=2) of four latents with known rules:
    0 fires on token 7; 1 on 9 right after 3; 2 on 11 two after 5 (any token between);
    3 fires on 13 half of the time at random (no rule can be precise)."""
    g = torch.Generator().manual_seed(seed)
    tok = torch.randint(0, V, (B, T), generator=g)
    prev1 = torch.cat([torch.full((B, 1), -1), tok[:, :-1]], 1)
    prev2 = torch.cat([torch.full((B, 2), -1), tok[:, :-2]], 1)
    rules = [
        tok == 7,
        (tok == 9) & (prev1 == 3),
        (tok == 11) & (prev2 == 5),
        (tok == 13) & (torch.rand(B, T, generator=g) < 0.5),
    ]
    acts = torch.zeros(B, T, 2)
    idx = torch.zeros(B, T, 2, dtype=torch.long)
    for latent, fire in enumerate(rules):  # the rules never overlap (distinct tokens)
        acts[..., 0] += fire * (1.0 + latent)
        idx[..., 0] += fire * latent
    idx[..., 1] = 5  # a latent that never fires strongly: always 0.01
    acts[..., 1] = 0.01
    valid = torch.ones(B, T, dtype=torch.bool)
    valid[:, 0] = False  # the attention sink is skipped
    thresholds = torch.tensor([0.5, 1.0, 1.5, 2.0, 1.0, 1.0])
    return tok, valid, firing_events(acts, idx, thresholds, valid)


def test_planted_rules_are_recovered_and_score_well():
    tok, valid, events = planted_text(0)
    pats = fit_patterns(tok, valid, events, n_latents=6, vocab=V)
    assert pats.of(0).tolist() == [[0, 7, ANY, ANY]]
    assert pats.of(1).tolist() == [[1, 9, 3, ANY]]
    assert pats.of(2).tolist() == [[2, 11, ANY, 5]]
    assert pats.of(5).numel() == 0  # 0.01 is below the threshold
    tok2, valid2, events2 = planted_text(1)  # held out
    scores = score_patterns(pats, tok2, valid2, events2, vocab=V)
    for latent in (0, 1, 2):
        assert scores.precision[latent] == pytest.approx(1.0)
        assert scores.recall[latent] == pytest.approx(1.0)
    # latent 3 fires at random on half of the 13s: whatever fitted by chance does not hold
    assert pats.of(3).shape[0] <= 3
    assert scores.precision[3].nan_to_num(0) < 0.8 and scores.recall[3] < 0.2
    assert scores.fires[5] == 0 and torch.isnan(scores.recall[5])
    p, r = scores.mean()  # over latents that fire: 0, 1, 2, 3
    assert 0.75 <= p < 0.95 and 0.75 <= r < 0.8


def test_a_rare_latent_is_fitted_from_its_examples():
    tok, valid, events = planted_text(0)
    # latent 4 fires on token 41 after 3; 41 never occurs in the fit text, only in its
    # top-context windows (five where it fires, three with 41 after 2 where it does not)
    windows = [[2, 3, 41, 4]] * 5 + [[-1, 2, 41, 6]] * 3
    ex_tok = torch.tensor(windows)
    fires = (ex_tok == 41) & (torch.roll(ex_tok, 1, 1) == 3)
    examples = Examples(torch.full((8,), 4), ex_tok, fires)
    pats = fit_patterns(tok, valid, events, 6, V + 2, examples=examples)
    assert pats.of(4).tolist() == [[4, 41, 3, ANY]]
    assert pats.of(0).tolist() == [[0, 7, ANY, ANY]]  # the others are unchanged


def brute_force(rows, tok, valid, fire):
    """Precision and recall of one latent's patterns by a loop over positions."""
    hits = matches = 0
    B, T = tok.shape
    for b in range(B):
        for t in range(T):
            if not valid[b, t]:
                continue
            before = [int(tok[b, t - o]) if t - o >= 0 else START for o in (1, 2)]
            hit = any(
                r[1] == tok[b, t] and all(r[2 + j] in (ANY, before[j]) for j in (0, 1))
                for r in rows
            )
            matches += hit
            hits += hit and bool(fire[b, t])
    n_fire = int((fire & valid).sum())
    return hits / max(matches, 1), hits / max(n_fire, 1)


def test_scores_match_brute_force_on_random_patterns():
    g = torch.Generator().manual_seed(3)
    tok = torch.randint(0, 6, (4, 30), generator=g)
    valid = torch.rand(4, 30, generator=g) > 0.1
    fire = torch.rand(3, 4, 30, generator=g) < 0.4  # three latents firing at random
    lat, pos = fire.flatten(1).nonzero(as_tuple=True)
    keep = valid.flatten()[pos]
    rows = torch.tensor(
        [[0, 1, ANY, ANY], [0, 2, 3, ANY], [0, 2, 4, ANY], [1, 0, ANY, START], [1, 5, 1, 2],
         [2, 3, 3, ANY], [2, 4, ANY, ANY]]
    )  # fmt: skip
    pats = Patterns(rows, torch.ones(7, dtype=torch.long), torch.ones(7, dtype=torch.long), 3)
    scores = score_patterns(pats, tok, valid, (lat[keep], pos[keep]), vocab=6)
    for latent in range(3):
        mine = rows[rows[:, 0] == latent].tolist()
        p, r = brute_force(mine, tok, valid, fire[latent])
        assert float(scores.precision[latent]) == pytest.approx(p)
        assert float(scores.recall[latent]) == pytest.approx(r)


def test_overlapping_patterns_are_refused():
    rows = torch.tensor([[0, 1, ANY, ANY], [0, 1, 2, ANY]])
    pats = Patterns(rows, torch.ones(2, dtype=torch.long), torch.ones(2, dtype=torch.long), 1)
    tok = torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="overlap"):
        score_patterns(pats, tok, tok >= 0, (torch.zeros(0), torch.zeros(0)), vocab=3)


def test_a_planted_feature_of_a_tiny_model_is_explained_by_its_token(one_thread):
    from builders import TEXTS, planted_sae
    from conftest import make_tiny_lm

    from steer.features.explain import fit_and_score, sae_codes

    lm = make_tiny_lm("llama")
    sae = planted_sae(lm)  # latent 0 fires on " Bridge" and nowhere else
    codes = sae_codes(lm, sae, TEXTS * 2, n_tokens=4000, ctx_len=32)
    assert codes.top_idx.shape == (*codes.tokens.shape, 4) and not codes.valid[:, 0].any()
    # its activation on " Bridge" varies with the context (5 to 146): count every firing
    patterns, scores = fit_and_score(codes, fraction=0.01)
    (bridge,) = lm.tokenizer(" Bridge", add_special_tokens=False).input_ids
    assert patterns.of(0).tolist() == [[0, bridge, ANY, ANY]]
    assert scores.precision[0] == 1.0 and scores.recall[0] == 1.0
    assert scores.fires[0] >= 5


def test_catalog_top_contexts_feed_the_fit(one_thread):
    from builders import TEXTS, planted_sae
    from conftest import make_tiny_lm

    from steer.features.catalog import build_catalog
    from steer.features.explain.from_catalog import catalog_examples, explain_catalog

    lm = make_tiny_lm("llama")
    sae = planted_sae(lm)
    catalog = build_catalog(lm, sae, TEXTS, n_tokens=2000, ctx_len=32, window=(6, 2))
    (bridge,) = lm.tokenizer(" Bridge", add_special_tokens=False).input_ids
    examples = catalog_examples(catalog, lm.tokenizer, fraction=0.01)
    mine = examples.latent == 0
    assert mine.any() and (examples.tokens[mine][:, 6] == bridge).all()  # the peak column
    assert examples.fires[mine][:, 6].all() and not examples.valid[:, :2].any()
    # Held-out text without a single " Bridge": the pattern comes from the top contexts
    other = [t for t in TEXTS if "Bridge" not in t]
    patterns, scores = explain_catalog(lm, sae, catalog, other, 1000, ctx_len=32, fraction=0.01)
    assert patterns.of(0).tolist() == [[0, bridge, ANY, ANY]]
    assert scores.fires[0] == 0 and scores.matches[0] == 0
