"""`steer attribute` end to end through typer's runner, on the tiny model and a planted SAE."""

import json

import pytest
import torch
from builders import invoke
from conftest import make_tiny_lm

from sae import TopKSAE
from steer.attribution import ablation_effects, attribute, resolve_target
from steer.steering import Intervention, SteeringHook

PROMPT = "The Golden Gate Bridge is a suspension bridge"


def assert_one_line_error(result, message):
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith(f"error: {message}"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_json_matches_the_library_and_the_exact_check(sae_dir):
    result = invoke(
        "attribute", "--sae", sae_dir, "--prompt", PROMPT, "--target", " in", "--contrast",
        " is", "--top", 5, "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    lm, sae = make_tiny_lm("llama"), TopKSAE.load(sae_dir)
    ids = torch.tensor(lm.tokenizer(PROMPT).input_ids)
    target = resolve_target(lm.tokenizer, ids, target=" in", contrast=" is")
    attr = attribute(lm, sae, ids, target)
    assert [r["latent"] for r in out["rows"]] == [s.latent for s in attr.top(5)]
    assert out["rows"][0]["score"] == pytest.approx(attr.top(1)[0].score, abs=1e-5)
    exact = ablation_effects(lm, sae, ids, target, [r["latent"] for r in out["rows"]])
    assert [r["exact"] for r in out["rows"]] == pytest.approx(exact.tolist(), abs=1e-5)
    assert out["target"]["position"] == len(ids) and out["target"]["text"] == " in"
    assert 0 <= out["error_share"] <= 1 and out["error_exact"] is not None
    assert out["tokens"] == [lm.tokenizer.decode([i]) for i in ids]
    assert all(r["drivers"] for r in out["rows"])


def test_table_names_the_metric_the_share_and_the_features(sae_dir):
    result = invoke("attribute", "--sae", sae_dir, "--prompt", PROMPT, "--position", 3, "--top", 3)
    assert result.exit_code == 0, result.output
    token = make_tiny_lm("llama").tokenizer.decode(
        make_tiny_lm("llama").tokenizer(PROMPT).input_ids[3]
    )
    assert f"logit({token!r})" in result.stdout.replace("\n", "")
    assert "unexplained share" in result.stdout
    assert "driven by" in result.stdout and "exact" in result.stdout


def test_a_completion_counts_positions_from_its_first_token(sae_dir):
    common = ["attribute", "--sae", sae_dir, "--prompt", "The Golden Gate", "--json"]
    by_pos = json.loads(invoke(*common, "--completion", " Bridge is red", "--position", 0).stdout)
    assert by_pos["target"]["text"] == " Bridge"
    assert by_pos["tokens"][-1] == "\n"  # the chat template ends with the assistant's turn
    by_target = json.loads(
        invoke(*common, "--completion", " Bridge is red", "--target", " Bridge").stdout
    )
    assert by_target["target"] == by_pos["target"]


def test_a_steered_generation_is_explained_with_its_levers_on(sae_dir, tmp_path):
    gen = invoke(
        "generate", "--sae", sae_dir, "--prompt", "The Golden Gate", "--feature", "0=30:add",
        "--max-tokens", 4, "--json",
    )  # fmt: skip
    assert gen.exit_code == 0, gen.output
    path = tmp_path / "gen.json"
    path.write_text(gen.stdout)
    record = json.loads(gen.stdout)
    common = ["attribute", "--sae", sae_dir, "--generated", path, "--position", -1, "--json"]
    steered = json.loads(invoke(*common, "--row", "steered").stdout)
    baseline = json.loads(invoke(*common).stdout)
    assert steered["levers"] and not baseline["levers"]
    # The steered row is explained as it ran: same tokens, the lever applied.
    lm, sae = make_tiny_lm("llama"), TopKSAE.load(sae_dir)
    from steer.steering.generate import build_prompt_ids

    prompt_ids = build_prompt_ids(lm, "The Golden Gate")
    ids = torch.cat([prompt_ids, torch.tensor(record["steered"]["token_ids"])])
    levers = SteeringHook(lm, sae, [Intervention(0, 30.0, "add")], prompt_len=len(prompt_ids))
    target = resolve_target(lm.tokenizer, ids, position=len(ids) - 1)
    assert steered["metric"] == pytest.approx(attribute(lm, sae, ids, target, levers=levers).metric)
    assert steered["target"]["token"] == record["steered"]["token_ids"][-1]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--target", " suspension bridge"], "--target ' suspension bridge' is"),
        (["--position", 40], "--position 40 is out of range: the prompt has"),
        (["--position", 0], "--position 0 of the prompt has nothing before it"),
        ([], "give --target TOKEN"),
        (["--target", " in", "--contrast", " in"], "the contrast token is the target"),
        (["--target", " in", "--method", "exact"], "--method must be linear or ig"),
        (["--completion", " red", "--target", " Bridge"], "--target ' Bridge' is not in the"),
        (["--target", " in", "--top", 0], "--top must be at least 1"),
    ],
)
def test_bad_targets_and_positions_are_one_line_errors(sae_dir, args, message):
    result = invoke("attribute", "--sae", sae_dir, "--prompt", PROMPT, *args)
    assert_one_line_error(result, message)


def test_a_bad_generate_json_is_a_one_line_error(sae_dir, tmp_path):
    path = tmp_path / "x.json"
    path.write_text('{"prompt": "hi"}')
    result = invoke("attribute", "--sae", sae_dir, "--generated", path, "--position", 0)
    assert_one_line_error(result, f"{path} is not the JSON of steer generate --json")
