"""Probe loss: offline tasks, 1-D logistic probes against brute force, a planted latent."""

import math

import pytest
import torch
from builders import CATALOG_LAYER, TEXTS, planted_sae
from conftest import make_tiny_lm

from steer.evals.probes import (
    TASKS,
    ProbeTask,
    best_probe,
    build_tasks,
    fit_1d_probes,
    heldout_losses,
    probe_eval,
    probe_losses,
    window_features,
)

DOCS = [
    "She was born in 1921 in a small village near the river. Her father played football "
    "for the local team (a league club) and her mother sang in a band. " * 3,
    'He wrote "Songs" in 1988, an album his band released; his town has a population of '
    "4,000 and the county council meets there every season. " * 3,
    "The cat sat on the mat and looked at the dog, which did not care at all about it. " * 3,
]


def test_every_task_builds_balanced_and_its_label_holds(tiny_tokenizer):
    tasks = build_tasks(DOCS * 20, tiny_tokenizer, n_per_class=10, window=12)
    assert len(TASKS) >= 8 and set(tasks) == set(TASKS)
    for task in tasks.values():
        assert task.ids.shape == (20, 12) and task.labels.sum() == 10
    year = tasks["year"]
    for ids, label in zip(year.ids, year.labels, strict=True):
        text = tiny_tokenizer.decode(ids)
        assert any(y in text for y in ("1921", "1988")) == bool(label) or label == 0
    # Shuffled positives hold the same tokens as some window of the text, in another order.
    shuffled = tasks["shuffled"]
    assert not any(torch.equal(p, q) for p in shuffled.ids[:10] for q in shuffled.ids[10:])
    with pytest.raises(ValueError, match="unknown probe task"):
        build_tasks(DOCS, tiny_tokenizer, names=["colour"])


def test_newton_probes_match_a_brute_force_fit():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, 5, generator=gen, dtype=torch.float64)
    y = (x[:, 2] + 0.8 * torch.randn(200, generator=gen, dtype=torch.float64) > 0).double()
    w, b = fit_1d_probes(x, y, l2=0.0)
    ours = probe_losses(w, b, x, y)
    for j in range(5):
        params = torch.zeros(2, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([params], max_iter=200, line_search_fn="strong_wolfe")

        def closure(j=j, opt=opt, params=params):
            opt.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                x[:, j] * params[0] + params[1], y
            )
            loss.backward()
            return loss

        opt.step(closure)
        assert float(ours[j]) == pytest.approx(float(closure().detach()), abs=1e-6)


def test_best_probe_finds_the_feature_that_is_the_label():
    gen = torch.Generator().manual_seed(1)
    labels = torch.cat([torch.ones(100), torch.zeros(100)])
    feats = torch.randn(200, 50, generator=gen)
    feats[:, 37] = labels * 3 + 0.1 * torch.randn(200, generator=gen)
    best = best_probe(feats, labels)
    assert best["feature"] == 37 and best["loss"] < 0.05 and best["accuracy"] == 1.0
    noise = best_probe(torch.randn(200, 3, generator=gen), labels)
    assert noise["loss"] > 0.6 and noise["loss"] < math.log(2) + 0.1  # chance


def test_a_latent_that_is_the_probe_feature_wins(one_thread):
    lm = make_tiny_lm("llama")
    sae = planted_sae(lm)  # latent 0 fires on " Bridge", and only there, in TEXTS
    tok = lm.tokenizer
    (bridge,) = tok(" Bridge", add_special_tokens=False).input_ids
    ids = torch.tensor(tok(" ".join(TEXTS[:24]), add_special_tokens=False).input_ids[:248])
    windows = ids.unfold(0, 8, 1)  # (241, 8): every window of 8 tokens
    labels = (windows[:, 1:] == bridge).any(1).float()
    assert 10 <= labels.sum() <= 100
    task = ProbeTask("bridge", "has Bridge", windows, labels)
    feats = window_features(lm, {"planted": sae}, CATALOG_LAYER, windows, autocast=False)
    assert torch.equal(feats["planted"][:, 0] > 0, labels > 0)  # the latent IS the feature
    losses, accuracy = heldout_losses(feats["planted"], labels)
    assert losses[0] < 0.1 and accuracy[0] == 1.0

    results = probe_eval(lm, {"planted": sae}, CATALOG_LAYER, {"bridge": task}, autocast=False)
    best = results["planted"]["tasks"]["bridge"]
    assert best["loss"] <= float(losses[0]) + 1e-9 and best["accuracy"] == 1.0
    assert results["planted"]["mean_loss"] == best["loss"]
    assert set(results) == {"residual", "planted"}
