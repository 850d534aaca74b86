"""`steer features --toward`: the JSON shape, the ranking and bad input, end to end."""

import json

import pytest
from builders import invoke
from conftest import make_tiny_lm, requires_embedded

from steer.steering.toward import MAX_SET


@pytest.fixture(scope="module")
def promoting_dir(tiny_model_dir, tmp_path_factory):
    from steering.test_toward import promoting_sae

    sae = promoting_sae(make_tiny_lm("llama"))
    sae.cfg.model_name = str(tiny_model_dir)
    folder = tmp_path_factory.mktemp("sae") / "promoting"
    sae.save(folder)
    return folder


def test_toward_json_has_exactly_the_documented_shape(promoting_dir, one_thread):
    result = invoke("features", "--sae", promoting_dir, "--toward", "Bridge", "--top", 3, "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert set(out) == {"toward", "features"} and out["toward"] == "Bridge"
    assert len(out["features"]) == 3
    for row in out["features"]:
        assert set(row) == {"feature", "label", "mode", "strength", "score"}
        assert isinstance(row["feature"], int) and isinstance(row["label"], str)
        assert row["mode"] in ("add", "clamp") and isinstance(row["strength"], float)
        assert isinstance(row["score"], float)
    assert out["features"][0]["feature"] == 7  # the planted lever


def test_toward_table_suggests_a_generate_command(promoting_dir, one_thread):
    result = invoke("features", "--sae", promoting_dir, "--toward", "Bridge", "--top", 2)
    assert result.exit_code == 0, result.output
    assert "--feature 7=" in result.stdout and ":add" in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--toward", "   "], "the --toward text is empty"),
        (["--toward", "dog", "--search", "x"], "give exactly one of"),
        (["--toward", "!!"], "no concept words"),
    ],
)
def test_toward_bad_input_is_one_line(promoting_dir, args, message):
    result = invoke("features", "--sae", promoting_dir, *args)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: {message}")
    assert "Traceback" not in result.output


@requires_embedded
def test_toward_steers_the_real_model_toward_a_concept():
    """End to end on SmolLM2 and the shipped SAE: the set --toward recommends, pulled
    together at its strengths and modes, makes `steer generate` name the concept where
    the baseline does not. "ocean" is a concept no single latent of this SAE steers (a
    brute-force search over 15 candidates at 4 strengths found none)."""
    sae = "checkpoints/smollm2-135m/resid_post.12/9216-k32"
    out = json.loads(invoke("features", "--sae", sae, "--toward", "ocean", "--json").stdout)
    assert 1 < len(out["features"]) <= MAX_SET
    specs = [
        arg
        for f in out["features"]
        for arg in ("--feature", f"{f['feature']}={f['strength']}:{f['mode']}")
    ]
    result = invoke(
        "generate",
        "--sae",
        sae,
        "--prompt",
        "Tell me about your weekend.",
        *specs,
        "--max-tokens",
        40,
        "--json",
    )
    assert result.exit_code == 0, result.output
    gen = json.loads(result.stdout)
    base, steered = gen["baseline"]["text"], gen["steered"]["text"]
    assert "ocean" not in base.lower()
    assert "ocean" in steered.lower()
