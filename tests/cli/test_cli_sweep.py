"""`steer sweep` and vector terms end to end: the files, the strength axis, bad input."""

import csv
import json

import pytest
import torch
from builders import invoke
from conftest import make_tiny_lm

from steer.steering.vectors import SteeringVector, save_vector


@pytest.fixture(scope="module")
def promoting_dir(tiny_model_dir, tmp_path_factory):
    """Latent 7 writes the " Bridge" embedding (test_toward.promoting_sae); the vector
    `bridge` beside it is that same direction, 10 units per unit of strength."""
    from steering.test_toward import promoting_sae

    lm = make_tiny_lm("llama")
    sae = promoting_sae(lm)
    sae.cfg.model_name = str(tiny_model_dir)
    folder = tmp_path_factory.mktemp("sae") / "promoting"
    sae.save(folder)
    direction = sae.decoder_directions(torch.tensor([7]))[0].detach() * 10
    save_vector(folder, SteeringVector("bridge", direction, hookpoint=sae.cfg.hookpoint))
    return folder


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("prompts") / "prompts.txt"
    path.write_text("The Golden Gate\n# a comment\nParis is the capital of\n")
    return path


def test_sweep_writes_csv_json_and_png_along_a_sorted_axis(
    promoting_dir, prompts_file, tmp_path, one_thread
):
    out = tmp_path / "sweep"
    result = invoke(
        "sweep", "v:bridge + 1 #3:add", "--sae", promoting_dir, "--strengths", "4,0,2",
        "--prompts", prompts_file, "--concept", "Bridge", "--per-term", "-n", 6,
        "--out", out, "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["strengths"] == [0.0, 2.0, 4.0]
    assert summary["prompts"] == ["The Golden Gate", "Paris is the capital of"]
    curves = [p["curve"] for p in summary["points"]]
    assert curves == ["1 v:bridge"] * 3 + ["1 #3:add"] * 3
    rows = list(csv.DictReader((out / "sweep.csv").open()))
    assert [float(r["strength"]) for r in rows[:3]] == [0.0, 2.0, 4.0]
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    replies = json.loads((out / "sweep.json").read_text())["points"][2]["replies"]
    assert len(replies) == 2
    hits = {(p["curve"], p["strength"]): p["hit_rate"] for p in summary["points"]}
    assert hits[("1 v:bridge", 0.0)] == 0.0 and hits[("1 v:bridge", 4.0)] == 1.0
    assert hits[("1 #3:add", 4.0)] == 0.0


def test_generate_steers_with_a_saved_vector(promoting_dir, one_thread):
    result = invoke(
        "generate", "--sae", promoting_dir, "--prompt", "Paris is the capital of",
        "--steer", "4 v:bridge", "-n", 5, "--json", "--no-chat",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert "Bridge" not in out["baseline"]["text"]
    assert out["steered"]["text"].count("Bridge") >= 3
    table = invoke(
        "generate", "--sae", promoting_dir, "--prompt", "Paris is the capital of",
        "--steer", "4 v:bridge", "-n", 2, "--no-chat",
    )  # fmt: skip
    assert "vectors in x their difference of means" in table.stdout  # the header's units


def test_each_expression_is_one_curve_and_the_table_prints(promoting_dir, tmp_path):
    result = invoke(
        "sweep", "2 v:bridge", "1 #3:add + 1 #5:add", "--sae", promoting_dir,
        "--strengths", "0,1", "--prompts", "The Golden Gate", "-n", 3, "--out", tmp_path / "s",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "2 v:bridge" in result.stdout and "CE over baseline" in result.stdout
    data = json.loads((tmp_path / "s" / "sweep.json").read_text())
    assert [p["curve"] for p in data["points"]] == ["2 v:bridge"] * 2 + ["1 #3:add + 1 #5:add"] * 2
    assert all(p["hit_rate"] is None for p in data["points"])  # no --concept


@pytest.mark.parametrize(
    "args, message",
    [
        (["#3", "--strengths", "1,x"], "--strengths: 'x' is not a number"),
        (["#3 +"], "steering expression, column"),
        (["v:nowhere"], "no vector 'nowhere'"),
        (["#3", "-n", "0"], "--max-tokens must be at least 1"),
        (["#999"], "feature 999 is out of range"),
    ],
)
def test_bad_input_is_one_line(promoting_dir, tmp_path, args, message):
    result = invoke("sweep", *args, "--sae", promoting_dir, "--out", tmp_path / "s")
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith(f"error: {message}")
    assert "Traceback" not in result.output
