"""`steer explain`: N2G patterns and LM explanations into the catalog, resumable."""

import json

import pytest
from builders import TEXTS, invoke, planted_sae
from conftest import make_tiny_lm

from steer.features.explain.store import Explanations


@pytest.fixture(scope="module")
def sae_dir(tiny_model_dir, tmp_path_factory):
    """The planted SAE (latent 0 fires on " Bridge") with a catalog, on disk."""
    sae = planted_sae(make_tiny_lm("llama"))
    sae.cfg.model_name = str(tiny_model_dir)
    folder = tmp_path_factory.mktemp("sae") / "tiny-l2"
    sae.save(folder)
    corpus = folder.parent / "index.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    result = invoke("index", "--sae", folder, "--corpus", corpus, "--tokens", 1500,
                    "--ctx-len", 32, "--no-n2g")  # fmt: skip
    assert result.exit_code == 0, result.output
    return folder


@pytest.fixture(scope="module")
def heldout(tmp_path_factory):
    path = tmp_path_factory.mktemp("heldout") / "texts.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS[::-1]))
    return path


def test_n2g_stores_patterns_and_scores(sae_dir, heldout):
    result = invoke("explain", "--sae", sae_dir, "--n2g", "--corpus", heldout, "--tokens", 2000)
    assert result.exit_code == 0, result.output
    assert "mean precision" in result.stdout and "recall" in result.stdout
    ex = Explanations.load(sae_dir / "catalog", 64)
    assert ex.patterns is not None and ex.meta["n2g"]["n_tokens"] == 2000
    assert ex.scores.fires.sum() > 0


def test_n2g_for_two_saes_at_one_hook_point_in_one_pass(sae_dir, heldout, tiny_model_dir):
    import torch

    from sae import SAEConfig, TopKSAE

    torch.manual_seed(1)
    other = sae_dir.parent / "other"
    TopKSAE(SAEConfig(32, 48, 4, hookpoint="resid_post.2", model_name=str(tiny_model_dir))).save(
        other
    )
    assert invoke("index", "--sae", other, "--corpus", heldout, "--tokens", 1000,
                  "--ctx-len", 32, "--no-n2g").exit_code == 0  # fmt: skip
    result = invoke("explain", "--sae", sae_dir, "--sae", other, "--n2g", "--corpus", heldout,
                    "--tokens", 1000)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"{sae_dir}: N2G patterns" in result.stdout and f"{other}: N2G" in result.stdout
    assert Explanations.load(other / "catalog", 48).scores.fires.shape == (48,)
    assert (other / "catalog" / "search.sqlite").is_file()
    two = invoke("explain", "--sae", sae_dir, "--sae", other, "--explainer", "x", "--no-score")
    assert two.exit_code == 1 and "one --sae" in two.stderr


def test_lm_explainer_runs_resumes_and_stores(sae_dir, heldout, tiny_model_dir):
    args = ("explain", "--sae", sae_dir, "--explainer", tiny_model_dir, "--latents", "0-2",
            "--corpus", heldout, "--tokens", 1000)  # fmt: skip
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert "explained 3 feature(s) now" in result.stdout
    ex = Explanations.load(sae_dir / "catalog", 64)
    assert sorted(ex.lm) == [0, 1, 2]
    assert all(e[0].explainer == str(tiny_model_dir) for e in ex.lm.values())
    # (the random tiny model often writes nothing: then there is nothing to score; the
    # scoring itself is tested with an oracle scorer in tests/features/test_lm_explain.py)
    assert all(e[0].n_scored > 0 or e[0].text == "" for e in ex.lm.values())
    again = invoke(*args)
    assert "explained 0 feature(s) now" in again.stdout  # resumed: nothing left to do


@pytest.mark.parametrize(
    "args, message",
    [
        ((), "give one of --n2g"),
        (("--n2g",), "give --corpus"),
        (
            ("--explainer", "x", "--latents", "5-3", "--no-score"),
            "--latents: 5-3 is an empty range",
        ),
        (("--explainer", "x", "--latents", "a", "--no-score"), "--latents: cannot read 'a'"),
    ],
)
def test_bad_input_is_one_line(sae_dir, args, message):
    result = invoke("explain", "--sae", sae_dir, *args)
    assert result.exit_code == 1 and result.stderr.startswith(f"error: {message}")
    assert "Traceback" not in result.output
