"""LM explanations: the loop on a tiny model, detection scoring, resume, storage."""

import pytest
import torch
from builders import TEXTS, planted_sae
from conftest import make_tiny_lm

from steer.features.catalog import build_catalog
from steer.features.explain.heldout import sae_codes
from steer.features.explain.lm import (
    LMExplainer,
    ScoringWindows,
    balanced_accuracy,
    explain_latents,
    mark,
)
from steer.features.explain.store import Explanations


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)
    lm = make_tiny_lm("llama")
    sae = planted_sae(lm)  # latent 0 fires on " Bridge" only
    catalog = build_catalog(lm, sae, TEXTS, n_tokens=2000, ctx_len=32, window=(6, 2))
    codes = sae_codes(lm, sae, TEXTS[::-1] * 2, n_tokens=3000, ctx_len=32)
    windows = ScoringWindows(codes, 0.01 * catalog.max_acts, lm.tokenizer)
    return lm, catalog, windows


class Oracle(LMExplainer):
    """A scorer that knows the truth: yes exactly when the text has " Bridge"."""

    def says_yes(self, explanation, texts):
        return torch.tensor([" Bridge" in t for t in texts])


class Tiny(LMExplainer):
    """The tiny random model's own generation; "(blank)" when it writes only specials."""

    def explain(self, examples):
        assert len(examples) <= 2 and all("<|endoftext|>" not in e for e in examples)
        text = super().explain(examples)
        assert isinstance(text, str) and "\n" not in text
        return text or "(blank)"


def test_mark_and_balanced_accuracy():
    assert mark(["a", " b", " c"], [0.0, 2.0, 0.5], 1.0) == "a<< b>> c"
    fires = torch.tensor([True, True, False, False])
    assert balanced_accuracy(torch.tensor([True, True, False, False]), fires) == 1.0
    assert balanced_accuracy(torch.tensor([True, True, True, True]), fires) == 0.5
    assert balanced_accuracy(torch.tensor([True, False, True, False]), fires) == 0.5


def test_scoring_windows_fire_where_the_latent_does(setup):
    lm, catalog, windows = setup
    yes, no = windows.windows(0, 4)
    assert len(yes) == len(no) == 4
    assert all("Bridge" in t for t in yes) and not any("Bridge" in t for t in no)


def test_explain_loop_scores_stores_and_resumes(setup, tmp_path):
    lm, catalog, windows = setup
    explainer = Tiny(lm, "tiny", max_new_tokens=4)
    scorer = Oracle(lm, "oracle")
    ex = Explanations()
    seen = []

    def stop_after_two(latent, result):
        seen.append(latent)
        if len(seen) == 2:
            raise KeyboardInterrupt

    latents = [0, 1, 2, 3]
    with pytest.raises(KeyboardInterrupt):
        explain_latents(
            explainer, scorer, catalog, latents, ex, windows,
            save=lambda: ex.save(tmp_path), save_every=1, progress=stop_after_two, n_examples=2,
        )  # fmt: skip
    back = Explanations.load(tmp_path, catalog.n_latents)
    assert sorted(back.lm) == [0]  # saved after the first; the second was interrupted
    first = back.lm[0][0]
    assert first.explainer == "tiny" and isinstance(first.text, str)
    # the oracle scorer separates firing from silent windows whatever the text says
    assert first.score == 1.0 and first.n_scored == 10
    resumed = []
    n = explain_latents(
        explainer, scorer, catalog, latents, back, windows,
        save=lambda: back.save(tmp_path), progress=lambda i, r: resumed.append(i), n_examples=2,
    )  # fmt: skip
    assert resumed == [1, 2, 3] and n == 3  # latent 0 is not explained twice
    final = Explanations.load(tmp_path, catalog.n_latents)
    assert sorted(final.lm) == [0, 1, 2, 3]
    assert all(e[0].explainer == "tiny" for e in final.lm.values())
    assert final.best_lm(0).score == 1.0
    assert catalog.label(0) != "" and final.label(0, catalog.label(0)).startswith(first.text[:3])
