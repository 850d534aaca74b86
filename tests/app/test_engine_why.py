"""The engine's "why this token?": a token of either completion explained as it was generated."""

from __future__ import annotations

import pytest
import torch
from builders import PROMPT, make_engine

from steer.attribution import ablation_effects
from steer.attribution.targets import Target
from steer.steering import SteeringHook


def logit_of(engine, row: int, index: int, hook=None) -> float:
    """The logit the model gave completion `row`'s token `index` (brute force, no cache)."""
    gen = engine.last
    ids = torch.tensor(gen.prompt_ids + gen.token_ids[row][:index])[None]
    with torch.inference_mode():
        if hook is not None:
            hook.reset(0)
        with hook if hook is not None else torch.inference_mode():
            logits = engine.lm.model(ids).logits[0, -1]
    return float(logits[gen.token_ids[row][index]])


def test_a_steered_token_is_explained_with_the_levers_it_was_generated_with(tmp_path, one_thread):
    engine = make_engine(tmp_path, catalog=False)
    engine.add_feature(3, strength=8.0, mode="add")
    list(engine.generate(PROMPT))
    gen = engine.last
    for row in (0, 1):
        index = len(gen.token_ids[row]) - 1
        view = engine.explain_token(row, index)
        hook = None
        if row == 1:
            hook = SteeringHook(engine.lm, engine.sae, gen.levers, prompt_len=len(gen.prompt_ids))
        assert view.metric == pytest.approx(logit_of(engine, row, index, hook), abs=1e-4)
        assert view.token == engine.token_text(gen.token_ids[row][index])
        assert len(view.tokens) == len(gen.prompt_ids) + index
        assert view.rows and all(r.exact is not None for r in view.rows)
        assert 0 <= view.error_share <= 1
        for r in view.rows:
            assert r.drivers and all(0 <= t <= r.position for t, _ in r.drivers)
    # The exact column is steering's ablate, under the same levers.
    ids = torch.tensor(gen.prompt_ids + gen.token_ids[1][: index + 1])
    target = Target(len(ids) - 2, gen.token_ids[1][index])
    exact = ablation_effects(engine.lm, engine.sae, ids, target, [r.latent for r in view.rows],
                             levers=hook)  # fmt: skip
    assert [r.exact for r in view.rows] == pytest.approx(exact.tolist(), abs=1e-5)


def test_explaining_needs_a_generation_and_a_token_in_range(tmp_path):
    engine = make_engine(tmp_path, catalog=False)
    with pytest.raises(ValueError, match="generate something first"):
        engine.explain_token(0, 0)
    list(engine.generate(PROMPT))
    with pytest.raises(ValueError, match="out of range"):
        engine.explain_token(0, 99)
    with pytest.raises(ValueError, match="no completion 2"):
        engine.explain_token(2, 0)


def test_ablate_lever_adds_or_switches_a_feature_to_ablate(tmp_path):
    engine = make_engine(tmp_path, catalog=False)
    assert engine.ablate_lever(5).mode == "ablate"
    engine.add_feature(7, strength=2.0)
    engine.toggle(7)
    lever = engine.ablate_lever(7)
    assert (lever.mode, lever.enabled) == ("ablate", True)
    assert [f.latent for f in engine.features] == [5, 7]
