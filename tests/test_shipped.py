"""The SAE family shipped in checkpoints/ for the embedded model (issue 6)."""

import json
import re
from pathlib import Path

import pytest
import torch
from conftest import requires_embedded

from sae import TopKSAE
from steer.app.engine import find_default_sae
from steer.features.catalog import FeatureCatalog

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "checkpoints" / "smollm2-135m"
HELDOUT_SAMPLE = ROOT / "tests" / "data" / "wiki-heldout-sample.jsonl"
MEMBERS = sorted(p.parent for p in SHIPPED.glob("*/*/cfg.json"))

# The README's claims for the default SAE, with margin (see README "The shipped SAEs").
FVU_CEILING = 0.17  # README: 0.143 on 128k held-out tokens; 0.140 on this sample
# The README walk-through: this feature of the default SAE, clamped at this strength.
# Feature 2374 ("Paris") of 9216-k32 clamped to 2.5x its max: the weekend moves to Paris.
WALKTHROUGH = {
    "feature": 2374,
    "strength": 2.5,
    "prompt": "Tell me about your weekend.",
    "concept": r"\bparis",
}


def test_a_family_is_shipped_with_a_default():
    assert len(MEMBERS) >= 2, "checkpoints/smollm2-135m/<hookpoint>/<n>-k<k>/ should hold a family"
    default = find_default_sae()
    assert default is not None and default.resolve() in [m.resolve() for m in MEMBERS]
    # search.sqlite is a cache built beside a catalog on first search (git-ignored)
    total = sum(
        f.stat().st_size for f in SHIPPED.rglob("*") if f.is_file() and f.name != "search.sqlite"
    )
    # The budget is ~120 MB; the k=64 SAE that brings block 20 under the FVU target took it
    # to ~123 MiB (README "The shipped SAEs").
    assert total < 125 * 2**20, f"shipped checkpoints take {total / 2**20:.1f} MiB (limit 125)"


def test_several_depths_span_the_model():
    depths = sorted(int(p.name.split(".")[1]) for p in SHIPPED.glob("resid_post.*"))
    assert len(depths) >= 4 and depths[0] <= 8 and depths[-1] >= 16, depths


DEPTHS = sorted({m.parent for m in MEMBERS}, key=lambda p: int(p.name.split(".")[1]))
# Every shipped SAE reconstructs its depth as the README says (target: FVU <= 0.2 on the
# held-out shard), with margin for this 1.5k-token sample. resid_post.20's k=32 SAE misses
# the target (README: FVU 0.219 on 16k held-out tokens; 0.214 on this sample), so its
# ceiling is its own figure + margin; its k=64 sibling reaches it (0.186).
SAMPLE_FVU_CEILING = {"resid_post.20/4608-k32": 0.25}


def test_every_depth_has_an_sae_within_the_fvu_target():
    """Issue 14: at least one SAE per shipped depth with held-out FVU <= 0.2 (eval.json)."""
    for depth in DEPTHS:
        evals = json.loads((depth / "eval.json").read_text())
        best = min(m["fvu"] for m in evals.values())
        assert best <= 0.2, (depth.name, best)


@requires_embedded
@pytest.mark.parametrize("depth", DEPTHS, ids=lambda p: p.name)
def test_every_depth_reconstructs_held_out_text(depth):
    from steer.evals.evaluate import EvalConfig, evaluate_saes
    from steer.lm.data import TokenContexts
    from steer.lm.models import load_model, parse_hookpoint

    saes = {m.name: TopKSAE.load(m) for m in MEMBERS if m.parent == depth}
    lm = load_model("smollm2-135m")
    contexts = TokenContexts(
        HELDOUT_SAMPLE, lm.tokenizer, ctx_len=128, shuffle_buffer=0, max_contexts=12
    )
    layer = parse_hookpoint(depth.name)
    results = evaluate_saes(lm, saes, layer, contexts, EvalConfig(tokens=1500))
    for name, metrics in results.items():
        print(depth.name, name, "FVU", metrics["fvu"], "loss recovered", metrics["loss_recovered"])
        ceiling = SAMPLE_FVU_CEILING.get(f"{depth.name}/{name}", 0.22)
        assert metrics["fvu"] < ceiling, (depth.name, name)
        assert metrics["loss_recovered"] > 0.8, (depth.name, name)


@pytest.mark.parametrize("member", MEMBERS, ids=lambda p: p.name)
def test_member_loads_fits_the_model_and_has_a_catalog(member):
    sae = TopKSAE.load(member)
    assert sae.cfg.d_in == 576 and sae.cfg.model_name == "smollm2-135m"
    assert sae.cfg.hookpoint == member.parent.name
    assert "command" in json.dumps(sae.cfg.extra), "the training command is recorded"
    assert (member.parent / "metrics.jsonl").is_file() and (member.parent / "eval.json").is_file()
    catalog = FeatureCatalog.load(member)
    assert catalog.n_latents == sae.n_latents and catalog.matches(sae)
    assert torch.isfinite(catalog.max_acts).all()


@requires_embedded
def test_default_sae_fvu_on_heldout_text_stays_under_the_readme_figure():
    from steer.evals.evaluate import EvalConfig, evaluate_saes
    from steer.lm.data import TokenContexts
    from steer.lm.models import load_model, parse_hookpoint

    sae = TopKSAE.load(find_default_sae())
    lm = load_model("smollm2-135m")
    contexts = TokenContexts(
        HELDOUT_SAMPLE, lm.tokenizer, ctx_len=128, shuffle_buffer=0, max_contexts=24
    )
    metrics = evaluate_saes(
        lm, {"sae": sae}, parse_hookpoint(sae.cfg.hookpoint), contexts, EvalConfig(tokens=3000)
    )["sae"]
    print("held-out sample FVU", metrics["fvu"], "loss recovered", metrics["loss_recovered"])
    assert metrics["fvu"] < FVU_CEILING
    assert metrics["loss_recovered"] > 0.8


@requires_embedded
def test_clamping_the_walkthrough_feature_steers_toward_its_concept():
    from steer.steering import Intervention, open_sae
    from steer.steering.generate import GenerationSettings, generate_text

    if WALKTHROUGH["feature"] is None:
        pytest.skip("no walk-through feature chosen yet")
    default = find_default_sae()
    lm, sae = open_sae(default)
    catalog = FeatureCatalog.load(default)
    rows = [[], [Intervention(WALKTHROUGH["feature"], WALKTHROUGH["strength"], "clamp")]]
    base, steered = generate_text(
        lm,
        sae,
        WALKTHROUGH["prompt"],
        rows,
        GenerationSettings(max_new_tokens=40),
        max_acts=catalog.max_acts,
    )
    assert not re.search(WALKTHROUGH["concept"], base["text"], re.I), base["text"]
    assert re.search(WALKTHROUGH["concept"], steered["text"], re.I), steered["text"]
