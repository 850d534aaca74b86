"""Sweeps: the dose-response grid on a tiny model with a lever that says " Bridge"."""

import csv
import json

import pytest
from conftest import make_tiny_lm
from steering.test_toward import promoting_sae

from steer.steering import Intervention
from steer.steering.success import succeeded
from steer.steering.sweep import Curve, run_sweep, scaled, write_sweep

PROMPTS = ["The Golden Gate", "Paris is the capital of"]
STRENGTHS = [0.0, 2.0, 8.0, 40.0]


@pytest.fixture(scope="module")
def result():
    lm = make_tiny_lm("llama")
    sae = promoting_sae(lm)
    curves = [
        Curve("#7:add", [Intervention(7, 1.0, "add")]),
        Curve("#3:add", [Intervention(3, 1.0, "add")]),
    ]
    return run_sweep(lm, sae, curves, STRENGTHS, PROMPTS, ["bridge"], n_tokens=6)


def test_grid_has_every_curve_at_every_strength_in_order(result):
    assert [(p.curve, p.strength) for p in result.points] == [
        (c, s) for c in ("#7:add", "#3:add") for s in STRENGTHS
    ]
    for p in result.points:
        assert len(p.replies) == len(PROMPTS)
        assert 0 <= p.coherent_rate <= 1 and 0 <= p.hit_rate <= 1


def test_the_planted_lever_names_the_concept_as_strength_grows(result):
    planted = {p.strength: p for p in result.points if p.curve == "#7:add"}
    assert planted[0.0].hit_rate == result.baseline_hit_rate == 0.0
    assert planted[0.0].replies == result.baseline_replies  # add 0 = no steering
    assert planted[40.0].hit_rate == 1.0
    assert all("Bridge" in r for r in planted[40.0].replies)
    other = {p.strength: p for p in result.points if p.curve == "#3:add"}
    assert other[40.0].hit_rate == 0.0


def test_files_are_csv_json_and_a_png(result, tmp_path):
    paths = write_sweep(result, tmp_path / "out", title="test")
    rows = list(csv.DictReader(paths["csv"].open()))
    assert len(rows) == len(result.points)
    strengths = [float(r["strength"]) for r in rows if r["curve"] == "#7:add"]
    assert strengths == sorted(strengths) == STRENGTHS
    data = json.loads(paths["json"].read_text())
    assert data["concept_words"] == ["bridge"] and len(data["points"]) == len(rows)
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_scaling_leaves_ablations_and_multiplies_the_rest():
    terms = [Intervention(1, 2.0, "clamp"), Intervention(2, 0.0, "ablate")]
    assert [(t.strength, t.mode) for t in scaled(terms, 3.0)] == [(6.0, "clamp"), (0.0, "ablate")]
    assert terms[0].strength == 2.0  # copies


def test_success_needs_two_new_coherent_mentions():
    base = ["a", "b", "the dog"]
    assert succeeded(base, ["dogs!", "a dog", "x"], [True, True, True], ["dog"])
    assert not succeeded(base, ["dogs!", "a dog", "x"], [True, False, True], ["dog"])
    assert not succeeded(base, ["dogs!", "b", "dog"], [True, True, True], ["dog"])  # 3rd had it


def test_bad_sweeps_are_refused():
    lm = make_tiny_lm("llama")
    sae = promoting_sae(lm)
    curve = [Curve("x", [Intervention(7, 1.0, "add")])]
    with pytest.raises(ValueError, match="no strengths"):
        run_sweep(lm, sae, curve, [], PROMPTS)
    with pytest.raises(ValueError, match="no prompts"):
        run_sweep(lm, sae, curve, [1.0], [])
    with pytest.raises(ValueError, match="finite"):
        run_sweep(lm, sae, curve, [float("nan")], PROMPTS)
