"""`steer circuit` end to end through typer's runner: a tiny Llama, SAEs after blocks 1 and 2
(the block-1 one with a catalog, so nodes carry labels)."""

import html
import json
import re

import pytest
import torch
from builders import invoke, make_tiny_sae, tiny_catalog
from conftest import make_tiny_lm

from sae import TopKSAE
from steer.attribution import resolve_target
from steer.attribution.circuit import build_circuit

PROMPT = "The Golden Gate Bridge is a suspension bridge"


@pytest.fixture(scope="module")
def family(tiny_model_dir, sae_dir, tmp_path_factory):
    """<root>/resid_post.1/64-k4 (with a catalog) and <root>/resid_post.2/64-k4 (sae_dir's)."""
    root = tmp_path_factory.mktemp("family")
    low = make_tiny_sae()
    low.cfg.model_name = str(tiny_model_dir)
    low.save(root / "resid_post.1" / "64-k4")
    tiny_catalog().save(root / "resid_post.1" / "64-k4")
    TopKSAE.load(sae_dir).save(root / "resid_post.2" / "64-k4")
    return root


def assert_one_line_error(result, message):
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith(f"error: {message}"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_json_is_the_documented_graph_and_matches_the_library(family):
    low, high = family / "resid_post.1" / "64-k4", family / "resid_post.2" / "64-k4"
    result = invoke(
        "circuit", "--sae", high, "--sae", low, "--prompt", PROMPT, "--target", " in",
        "--nodes", 4, "--check", 3, "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["layers"] == [1, 2]
    assert out["target"]["text"] == " in" and out["target"]["position"] == len(out["tokens"])
    keys = {"id", "kind", "layer", "pos", "feature", "label", "activation", "effect", "token"}
    assert all(set(n) == keys for n in out["nodes"])
    ids = {n["id"] for n in out["nodes"]}
    assert all(e["src"] in ids and e["dst"] in ids for e in out["edges"])
    assert {n["kind"] for n in out["nodes"]} == {"token", "latent", "error", "output"}
    assert sum(n["kind"] == "latent" and n["layer"] == 1 for n in out["nodes"]) == 4
    assert all(0 <= share <= 1 for share in out["explained"].values())
    assert set(out["explained"]) == {"tokens", "1", "2"}
    # Labels come from each SAE's catalog (block 1 has one, block 2 none).
    catalog = tiny_catalog()
    for n in out["nodes"]:
        if n["kind"] == "latent":
            assert n["label"] == (catalog.label(n["feature"]) if n["layer"] == 1 else "")
    assert len(out["checks"]) == 3 + 2
    # The same graph as the library builds.
    lm = make_tiny_lm("llama")
    ids_t = torch.tensor(lm.tokenizer(PROMPT).input_ids)
    target = resolve_target(lm.tokenizer, ids_t, target=" in")
    lib = build_circuit(lm, [TopKSAE.load(low), TopKSAE.load(high)], ids_t, target, nodes=4)
    assert [n.id for n in lib.nodes] == [n["id"] for n in out["nodes"]]
    assert [e.weight for e in lib.edges] == pytest.approx([e["weight"] for e in out["edges"]])


def test_the_tree_runs_from_the_output_back_to_the_tokens(family):
    high = family / "resid_post.2" / "64-k4"
    result = invoke(
        "circuit", "--sae", high, "--all-depths", "--prompt", PROMPT, "--target", " in",
        "--contrast", " is", "--nodes", 3,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "resid_post.1, resid_post.2" in text  # --all-depths found the sibling
    assert "logit(' in') - logit(' is') =" in text
    lines = text.splitlines()
    root = next(i for i, line in enumerate(lines) if line.startswith("logit("))
    depth = {}  # the tree's indentation: output, then L2, then L1 / errors, then tokens
    for line in lines[root + 1 :]:
        match = re.search(r"[├└]── [+-][\d.]+  (L\d|token)", line)
        if match:
            depth.setdefault(match.group(1), line.index(match.group(0)))
    assert depth["L2"] < depth["L1"] < depth["token"]
    flat = " ".join(text.split())  # rich wraps long lines at the runner's 80 columns
    assert "the SAE error" in flat  # the share per depth, in the summary
    assert "carry" in flat and "of the depth's |attribution|" in flat
    assert "check by ablation" in text


def test_html_is_one_self_contained_file_with_every_node(family, tmp_path):
    low, high = family / "resid_post.1" / "64-k4", family / "resid_post.2" / "64-k4"
    page = tmp_path / "circuit.html"
    result = invoke(
        "circuit", "--sae", low, "--sae", high, "--prompt", PROMPT, "--target", " in",
        "--html", page, "--json", "--check", 0,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    text = page.read_text()
    assert not re.search(r"https?://", text)
    assert "<script src" not in text and "<link" not in text
    assert text.startswith("<!doctype html>") and "<svg" in text
    for n in out["nodes"]:
        assert f"data-id='{n['id']}'" in text
    labelled = [n for n in out["nodes"] if n["label"]]
    assert labelled and all(html.escape(n["label"][:20]) in text for n in labelled)
    assert text.count("<path data-s=") == len(out["edges"])


def test_bad_input_is_one_line_error(family, sae_dir):
    low = family / "resid_post.1" / "64-k4"
    common = ["circuit", "--sae", low, "--prompt", PROMPT]
    assert_one_line_error(invoke(*common, "--target", " Golden Gate"), "--target ' Golden Gate'")
    assert_one_line_error(invoke(*common, "--target", " in", "--nodes", 0), "--nodes")
    assert_one_line_error(invoke(*common), "give --target TOKEN")
    assert_one_line_error(
        invoke(*common, "--sae", family / "resid_post.1" / "64-k4", "--target", " in"),
        "two SAEs read resid_post.1",
    )
    assert_one_line_error(invoke(*common, "--sae", family / "nowhere", "--target", " in"), "--sae")
    assert_one_line_error(invoke(*common, "--target", " in", "--html", family), "--html")
