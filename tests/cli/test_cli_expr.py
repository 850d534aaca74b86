"""`steer generate --steer EXPR`, presets that carry the expression, and the shipped SAE as
every command's default --sae."""

import json

import pytest
from builders import TEXTS, invoke

import steer.app.checkpoints

PROMPT = "The Golden Gate"


def generate(*args):
    result = invoke("generate", "-p", PROMPT, "--max-tokens", 5, "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_steer_expression_equals_the_feature_flags(sae_dir):
    by_flags = generate("--sae", sae_dir, "-f", "0=40:add", "-f", "3=2")
    by_expr = generate("--sae", sae_dir, "--steer", "40 #0:add + 2 #3")
    assert by_expr["steered"] == by_flags["steered"]
    assert by_expr["steer"] == "40 #0:add + 2 #3" == by_flags["steer"]
    assert by_expr["steered"]["text"] != by_expr["baseline"]["text"]
    # Flags and an expression add up; --positions is the default of terms without '@'.
    both = generate("--sae", sae_dir, "--steer", "40 #0:add", "-f", "3=2")
    assert both["steered"] == by_flags["steered"]
    late = generate("--sae", sae_dir, "--steer", "40 #0:add @generated + 2 #3 @generated")
    assert late["steered"] == generate("--sae", sae_dir, "--positions", "generated", "-f", "0=40:add", "-f", "3=2")["steered"]  # fmt: skip


def test_a_gate_that_never_holds_gives_the_baseline(sae_dir):
    out = generate("--sae", sae_dir, "--steer", "40 #5:add @when:#0>1e9")
    assert out["steered"] == out["baseline"]
    assert out["interventions"][0]["gate"] == {"source": 0, "op": ">", "threshold": 1e9}


@pytest.mark.parametrize(
    "expr,message",
    [
        ("2.5 #", "steering expression, column 5: unexpected '#': expected a strength or '#id'"),
        ("2 #1:boost", "steering expression, column 6: unknown mode 'boost'"),
        ("", "nothing to steer"),
        ("#999", "feature 999 is out of range"),
        ("v:formal", "no vector 'formal' beside the SAE"),
    ],
)
def test_a_bad_expression_is_one_line_and_nothing_runs(sae_dir, expr, message):
    # --model names no model: the expression is refused before any model would load.
    args = ["generate", "--sae", sae_dir, "-p", PROMPT, "--steer", expr]
    result = invoke(*args, *(["--model", "/no/such/model"] if "column" in message else []))
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith(f"error: {message}")
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_presets_carry_the_expression_and_old_ones_load(sae_dir, tmp_path):
    path = tmp_path / "p.json"
    expr = "40 #0:add @first:3 + 2 #3 @when:#0>0.5"
    first = generate("--sae", sae_dir, "--steer", expr, "--save-preset", path)
    saved = json.loads(path.read_text())
    assert saved["steer"] == expr and len(saved["interventions"]) == 2
    assert generate("--preset", path)["steered"] == first["steered"]
    old = {"version": 1, "sae": str(sae_dir), "interventions": [{"latent": 0, "strength": 40, "mode": "add"}]}  # fmt: skip
    path.write_text(json.dumps(old))
    assert generate("--preset", path)["steered"] == generate("--sae", sae_dir, "--steer", "40 #0:add")["steered"]  # fmt: skip
    path.write_text(json.dumps({**old, "steer": "41 #0:add"}))
    result = invoke("generate", "--preset", path, "-p", PROMPT)
    assert result.exit_code == 1
    assert "'steer' and 'interventions' name different levers" in result.stderr


@pytest.fixture
def shipped(sae_dir, monkeypatch):
    """The planted tiny SAE stands in for the SAE shipped with the embedded model."""
    monkeypatch.setattr(steer.app.checkpoints, "find_default_sae", lambda roots=None: sae_dir)
    return sae_dir


def test_every_command_defaults_to_the_shipped_sae_and_says_so(shipped, tmp_path):
    said = f"using the shipped SAE {shipped}"
    out = invoke("generate", "-p", PROMPT, "--steer", "40 #0:add", "-n", 3, "--json")
    assert out.exit_code == 0, out.output
    assert said in out.stderr and json.loads(out.stdout)["sae"] == str(shipped)
    found = invoke("features", "The Golden Gate Bridge is red.", "--json")
    assert found.exit_code == 0, found.output
    assert said in found.stderr and json.loads(found.stdout)["features"][0]["feature"] == 0
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    index = ["--corpus", corpus, "--tokens", 2000, "--ctx-len", 32, "--out", tmp_path / "cat"]
    result = invoke("index", *index)
    assert result.exit_code == 0, result.output
    assert said in result.stderr and (tmp_path / "cat").is_dir()
    result = invoke("eval", "--corpus", corpus, "--tokens", 200, "--ctx-len", 16, "--json")
    assert result.exit_code == 0, result.output
    assert said in result.stderr
    for command in ("attribute", "circuit"):
        result = invoke(command, "-p", PROMPT, "--target", " Bridge", "--json")
        assert result.exit_code == 0, result.output
        assert said in result.stderr, command
    # explain reaches the shipped SAE (whose stand-in has no catalog beside it here)
    result = invoke("explain", "--n2g", "--corpus", corpus, "--tokens", 2000)
    assert said in result.stderr and "no feature catalog for" in result.stderr
    # Another model has no default SAE: the flag is asked for, in one line.
    result = invoke("features", "Hi", "--model", "gpt2")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: give the SAE with --sae DIR")


def test_the_header_says_when_terms_keep_their_own_positions(sae_dir):
    plain = invoke("generate", "--sae", sae_dir, "-p", PROMPT, "--max-tokens", 2, "--steer", "2 #3")
    assert plain.exit_code == 0 and "positions=all ·" in plain.stdout
    own = invoke(
        "generate", "--sae", sae_dir, "-p", PROMPT, "--max-tokens", 2, "--steer", "2 #3 @generated"
    )
    assert own.exit_code == 0 and "(terms with @ keep their own)" in own.stdout
