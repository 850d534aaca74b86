"""Output scores (steer/features/catalog/output.py): a planted promoter tops them, the
catalog stores them, a catalog from before them still loads, the CLI ranks and filters."""

import json

import pytest
import torch
from builders import invoke
from conftest import make_tiny_lm, make_tiny_model

from steer.features.catalog import FeatureCatalog
from steer.features.catalog.output import add_output_scores, output_scores

PLANTED = 7


def confident_lm(model=None):
    """The tiny Llama with a final-norm gain of 10: its random logits become confident
    next-token predictions (a trained model's), which a direction can then move."""
    from conftest import _tiny_tokenizer

    from steer.lm.models import wrap_model

    model = model or make_tiny_model("llama")
    with torch.no_grad():
        model.model.norm.weight.fill_(10.0)
    return wrap_model(model, _tiny_tokenizer(), "tiny-confident")


def promoter(lm):
    """Random directions, except latent PLANTED: the (tied) embedding row of " Bridge", at
    the last block, so adding it makes the model say " Bridge"."""
    from steering.test_toward import promoting_sae

    sae = promoting_sae(lm, planted=PLANTED)
    sae.cfg.hookpoint = f"resid_post.{lm.n_layers - 1}"
    return sae


def test_the_planted_promoter_gets_the_top_output_score(one_thread):
    lm = confident_lm()
    sae = promoter(lm)
    scores, tokens, rise = output_scores(lm, sae, alpha=2.0, batch=20)
    assert scores.shape == (sae.n_latents,) and tokens.shape == rise.shape
    assert int(scores.argmax()) == PLANTED
    assert lm.tokenizer.decode([int(tokens[PLANTED, 0])]) == " Bridge"
    assert torch.allclose(scores, rise.sum(-1))  # the score is the mass moved onto them
    assert float(scores[PLANTED]) > 2 * float(scores.median())


def test_catalog_keeps_output_scores_and_loads_without_them(tmp_path, one_thread):
    from builders import make_tiny_sae, tiny_catalog

    lm = make_tiny_lm("llama")
    shared = tiny_catalog()  # the session's: copied, not changed
    catalog = FeatureCatalog(dict(shared.tensors), shared.labels, shared.pieces, dict(shared.meta))
    add_output_scores(catalog, lm, make_tiny_sae(), batch=64)
    catalog.save(tmp_path)
    loaded = FeatureCatalog.load(tmp_path)
    best = int(loaded.output_scores.argmax())
    entry = loaded.entry(best)
    assert entry.output_score == pytest.approx(float(loaded.output_scores[best]), abs=1e-4)
    assert len(entry.output_tokens) == 8 and all(isinstance(t, str) for t in entry.output_tokens)
    ids, rise = loaded.output_table()  # vocabulary ids, for --toward's candidates
    assert ids.shape == rise.shape == (loaded.n_latents, 10)
    assert entry.output_tokens[0] == lm.tokenizer.decode([int(ids[best, 0])])
    assert loaded.by_output_score([0, best, 1], sort=True)[0] == best
    assert loaded.by_output_score(list(range(loaded.n_latents)), min_score=1.1) == []

    # A catalog from before output scores: it loads, and says how to add them.
    for key in ("output_score", "output_ids", "output_rise"):
        loaded.tensors.pop(key)
    loaded.meta.pop("output")
    loaded.save(tmp_path)
    old = FeatureCatalog.load(tmp_path)
    assert old.output_scores is None and old.entry(0).output_score is None
    with pytest.raises(ValueError, match="--output-scores-only"):
        old.by_output_score([0], sort=True)


@pytest.fixture(scope="module")
def promoter_dir(tmp_path_factory):
    from conftest import _tiny_tokenizer

    model = make_tiny_model("llama")
    lm = confident_lm(model)
    folder = tmp_path_factory.mktemp("confident")
    model.save_pretrained(folder / "model")
    _tiny_tokenizer().save_pretrained(folder / "model")
    sae = promoter(lm)
    sae.cfg.model_name = str(folder / "model")
    sae.save(folder / "sae")
    return folder / "sae"


def test_index_scores_and_features_rank_by_them(promoter_dir, tiny_corpus, one_thread):
    built = invoke(
        "index", "--sae", promoter_dir, "--corpus", tiny_corpus, "--tokens", "2k",
        "--ctx-len", 32, "--no-n2g",
    )  # fmt: skip
    assert built.exit_code == 0, built.output
    catalog = FeatureCatalog.load(promoter_dir)
    assert catalog.output_scores is not None
    # steer index measures at the default strength: recomputing gives the same numbers
    redo = invoke("index", "--sae", promoter_dir, "--output-scores-only")
    assert redo.exit_code == 0 and "output scores for 48 features" in redo.stdout
    scores = FeatureCatalog.load(promoter_dir).output_scores
    assert torch.allclose(scores, catalog.output_scores)

    entry = invoke("features", "--sae", promoter_dir, "--id", PLANTED)
    assert "output score" in entry.stdout

    by_text = invoke(
        "features", "--sae", promoter_dir, "the bridge", "--sort", "output", "-n", 5, "--json"
    )
    rows = json.loads(by_text.stdout)["features"]
    got = [r["output_score"] for r in rows]
    assert rows and got == sorted(got, reverse=True)
    cut = sorted(got)[len(got) // 2]
    kept = json.loads(
        invoke(
            "features", "--sae", promoter_dir, "the bridge", "--min-output-score", cut, "--json"
        ).stdout
    )["features"]
    assert kept and all(r["output_score"] >= cut for r in kept)

    bad = invoke("features", "--sae", promoter_dir, "--id", 1, "--sort", "output")
    assert bad.exit_code == 1 and "with a TEXT or --search" in bad.output
