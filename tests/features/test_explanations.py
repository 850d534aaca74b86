"""Explanations beside the catalog (labels, storage) and the ranked FTS5 search."""

import math
import os

import pytest
import torch

from steer.features.explain.n2g import ANY, START, Patterns, Scores
from steer.features.explain.search import SearchIndex, fts_query
from steer.features.explain.store import Explanations, LMExplanation

DOCS = [
    ("Bridge → Francisco", "", "", "", "a suspension bridge"),  # 0: in the label
    ("", "", "", "", "they walked to the bridge over the river"),  # 1: once in a context
    ("", "", "", "", "bridge\nbridges\nthe bridge\na bridge of boats"),  # 2: in every context
    ("dog/dogs", "", "", "", "cats and dogs"),  # 3: not at all
    ("", "", "", "", "the golden bridge at dawn"),  # 4: both words of "golden bridge"
]


def test_search_ranks_label_over_many_contexts_over_one():
    index = SearchIndex.build(DOCS)
    hits = [i for i, _ in index.search("bridge")]
    assert hits[:2] == [0, 2] and set(hits) == {0, 1, 2, 4}
    scores = [s for _, s in index.search("bridge")]
    assert scores == sorted(scores, reverse=True)
    assert [i for i, _ in index.search("golden bridge")][0] == 4  # both words beat one
    assert {i for i, _ in index.search("bridges")} == {0, 1, 2, 4}  # stemmed
    assert {i for i, _ in index.search("brid")} == {0, 1, 2, 4}  # the last word as a prefix
    assert index.search("(") == [] and fts_query("  ") is None
    assert index.search('bridge" OR dog') != []  # quotes cannot break the query syntax
    assert [i for i, _ in index.search("bridge", limit=1)] == [0]


def test_index_file_is_reused_rebuilt_on_a_new_stamp_and_in_memory_when_read_only(tmp_path):
    path = tmp_path / "search.sqlite"
    built = []

    def docs():
        built.append(1)
        return DOCS

    assert SearchIndex.open(path, "a", docs).search("dog")[0][0] == 3
    assert SearchIndex.open(path, "a", docs).search("dog")[0][0] == 3
    assert len(built) == 1 and path.is_file()
    SearchIndex.open(path, "b", docs)
    assert len(built) == 2
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        assert SearchIndex.open(ro / "search.sqlite", "a", docs).search("dog")[0][0] == 3


def make_explanations() -> Explanations:
    rows = torch.tensor(
        [
            [0, 10, ANY, ANY],  # latent 0: " Paris" or " London" alone
            [0, 11, ANY, ANY],
            [1, 10, 12, ANY],  # latent 1: " Paris" after " in" or " to"
            [1, 10, 13, ANY],
            [2, 10, ANY, 12],  # latent 2: " Paris" two after " in"
            [3, 14, START, START],  # latent 3: "The" starting a text
        ]
    )
    patterns = Patterns(rows, torch.tensor([9, 5, 8, 3, 4, 2]), torch.tensor([10] * 6), 5)
    nan = float("nan")
    scores = Scores(
        torch.tensor([0.9, 0.8, 0.3, 1.0, nan]),
        torch.tensor([0.5, 0.4, 0.2, 1.0, nan]),
        torch.tensor([5, 4, 1, 2, 0]),
        torch.tensor([6, 5, 3, 2, 0]),
        torch.tensor([10, 10, 5, 2, 0]),
    )
    ex = Explanations()
    names = {10: " Paris", 11: " London", 12: " in", 13: " to", 14: "The"}

    class Tok:
        def decode(self, ids):
            return names[ids[0]]

    ex.set_n2g(patterns, scores, Tok(), corpus="held-out", n_tokens=100)
    return ex


def test_labels_and_explanations_from_patterns():
    ex = make_explanations()
    assert ex.n2g_label(0) == '" Paris"/" London"'
    assert ex.n2g_label(1) == '" Paris" after " in"/" to"'
    assert ex.n2g_label(2) == '" Paris" after " in _"'
    assert ex.n2g_label(3) == '"The" after "⟨start⟩"'
    assert ex.n2g_label(4) is None
    assert ex.pattern_texts(2) == ['" in" _ " Paris"']
    assert ex.label(0, "Paris/London → France") == '" Paris"/" London" → France'
    assert ex.label(2, "Paris → France") == "Paris → France"  # precision 0.3: the old one
    assert ex.label(4, "dead (never fired)") == "dead (never fired)"
    shown = ex.explanation(1)
    assert shown.source == "n2g" and shown.score == "precision 0.80 · recall 0.40"
    assert shown.text == '" in" " Paris", " to" " Paris"'
    assert ex.meta["n2g"]["corpus"] == "held-out"


def test_the_best_scoring_lm_explanation_wins_the_label():
    ex = make_explanations()
    ex.add_lm(1, LMExplanation("tiny", "the city of Paris", 0.6, 20))
    assert ex.label(1, "x → France").startswith('" Paris" after')  # 0.6: not good enough
    ex.add_lm(1, LMExplanation("big", "travel to Paris", 0.9, 20))
    ex.add_lm(1, LMExplanation("tiny", "mentions of Paris", 0.8, 20))  # replaces tiny's
    assert [e.text for e in ex.lm[1]] == ["travel to Paris", "mentions of Paris"]
    assert ex.label(1, "x → France") == "travel to Paris → France"
    shown = ex.explanation(1)
    assert (shown.text, shown.source, shown.score) == ("travel to Paris", "big", "detection 0.90")
    assert "travel to Paris" in ex.search_text(1) and " in Paris" in ex.search_text(1)


def test_explanations_round_trip(tmp_path):
    ex = make_explanations()
    ex.add_lm(3, LMExplanation("tiny", "sentence starts", None, 0))
    ex.save(tmp_path)
    back = Explanations.load(tmp_path, n_latents=5)
    assert torch.equal(back.patterns.rows, ex.patterns.rows)
    assert torch.equal(back.scores.fires, ex.scores.fires)
    assert math.isnan(float(back.scores.precision[4]))
    assert back.pieces == ex.pieces and back.lm == ex.lm
    assert back.label(1, "a → b") == ex.label(1, "a → b")
    assert back.meta["n2g"]["mean_precision"] == pytest.approx(ex.meta["n2g"]["mean_precision"])
    with pytest.raises(ValueError, match="another SAE"):
        Explanations.load(tmp_path, n_latents=6)
    (tmp_path / "explanations.json").write_text("{")
    with pytest.raises(ValueError, match="corrupt"):
        Explanations.load(tmp_path, n_latents=5)


def test_a_catalog_loads_its_explanations_and_searches_them(tmp_path, one_thread):
    from builders import TEXTS, planted_sae
    from conftest import make_tiny_lm

    from steer.features.catalog import FeatureCatalog, build_catalog
    from steer.features.explain.from_catalog import explain_catalog

    lm = make_tiny_lm("llama")
    sae = planted_sae(lm)
    catalog = build_catalog(lm, sae, TEXTS, n_tokens=2000, ctx_len=32, window=(6, 2))
    folder = catalog.save(tmp_path / "catalog")
    old_label = FeatureCatalog.load(folder).label(0)  # no explanations yet: loads as before
    assert FeatureCatalog.load(folder).explanations is None
    patterns, scores = explain_catalog(lm, sae, catalog, TEXTS[::-1], 2000, ctx_len=32,
                                       fraction=0.01)  # fmt: skip
    ex = Explanations.for_catalog(folder, catalog)
    ex.set_n2g(patterns, scores, lm.tokenizer)
    ex.save(folder)
    loaded = FeatureCatalog.load(folder)
    assert loaded.explanations is not None
    assert loaded.label(0).startswith('" Bridge"') and loaded.label(0) != old_label
    entry = loaded.entry(0)
    assert entry.explanation == '" Bridge"' and entry.explanation_source == "n2g"
    assert entry.explanation_score.startswith("precision 1.00")
    assert loaded.search("bridge")[0].index == 0
    assert (folder / "search.sqlite").is_file()  # the index is kept beside the catalog
    assert loaded.search("->") == loaded.substring_search("->")  # no words: substring match
    # explanations made for another SAE are left out
    ex.meta["sae_fingerprint"] = "another"
    ex.save(folder)
    assert FeatureCatalog.load(folder).explanations is None
    assert FeatureCatalog.load(folder).label(0) == old_label
