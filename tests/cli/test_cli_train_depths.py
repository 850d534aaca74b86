"""`steer train --layer 1,2`: several depths from one forward pass per batch."""

import json

import pytest
from builders import (
    assert_one_line_error,
    assert_same_sae,
    ctrl_c_in_training,
    invoke,
    tiny_train_args,
)

from steer.cli.training import parse_layers

NAMES = ("64-k4", "64-k8", "128-k4", "128-k8")


def depth_args(model_dir, corpus, out, layer):
    return tiny_train_args(model_dir, corpus, out, layer=layer)


def test_two_depths_at_once_equal_two_one_depth_runs(tiny_model_dir, tiny_corpus, tmp_path):
    result = invoke(*depth_args(tiny_model_dir, tiny_corpus, tmp_path / "both", "1,3"))
    assert result.exit_code == 0, result.output
    assert "steer eval --sae" in result.stderr and "resid_post.1" in result.stderr
    for layer in (1, 3):
        one = tmp_path / f"one{layer}"
        args = depth_args(tiny_model_dir, tiny_corpus, one, f"resid_post.{layer}")
        assert invoke(*args).exit_code == 0
        depth = tmp_path / "both" / f"resid_post.{layer}"
        for name in NAMES:
            # Same seed, same tokens in the same order, the same activations (the forward
            # pass only goes further): the same weights, bit for bit.
            assert_same_sae(depth / name, one / name, exact=True)
            cfg = json.loads((depth / name / "cfg.json").read_text())
            assert cfg["hookpoint"] == f"resid_post.{layer}"
            assert cfg["extra"]["layers"] == [1, 3]
        # Each depth logs its own family, under the names a one-depth run uses.
        records = [json.loads(x) for x in (depth / "metrics.jsonl").read_text().splitlines()]
        reference = [json.loads(x) for x in (one / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in records] == [r["step"] for r in reference]
        assert set(records[-1]["saes"]) == set(NAMES)
        assert records[-1]["saes"]["64-k4"]["fvu"] == reference[-1]["saes"]["64-k4"]["fvu"]
    # A depth's folder is an SAE folder like any other.
    result = invoke(
        "eval", "--sae", tmp_path / "both" / "resid_post.3" / "64-k4", "--tokens", "100",
        "--device", "cpu",
    )  # fmt: skip
    assert result.exit_code == 0, result.output


def test_two_depths_interrupted_resume_to_the_same_weights(tiny_model_dir, tiny_corpus, tmp_path):
    straight = tmp_path / "straight"
    assert invoke(*depth_args(tiny_model_dir, tiny_corpus, straight, "1-3:2")).exit_code == 0
    out = tmp_path / "run"
    args = depth_args(tiny_model_dir, tiny_corpus, out, "1,3")
    with ctrl_c_in_training(at_step=5):
        result = invoke(*args)
    assert result.exit_code == 130, result.output
    assert "--layer 1,3" in result.stderr and "--resume" in result.stderr
    # Other depths than the run's: refused, the run left as it was.
    other = depth_args(tiny_model_dir, tiny_corpus, out, "1,2")
    assert_one_line_error(invoke(*other, "--resume"), "cannot resume")
    result = invoke(*args, "--resume")
    assert result.exit_code == 0, result.output
    for layer in (1, 3):
        depth = f"resid_post.{layer}"
        for name in NAMES:
            assert_same_sae(out / depth / name, straight / depth / name, exact=True)
        steps = [
            json.loads(x)["step"] for x in (out / depth / "metrics.jsonl").read_text().splitlines()
        ]
        assert steps == sorted(set(steps))  # no step logged twice after the resume


@pytest.mark.parametrize(
    "spec, layers",
    [("8", 8), ("resid_post.8", 8), ("4,8", [4, 8]), ("4-16:4", [4, 8, 12, 16]),
     ("12,2-3", [2, 3, 12])],
)  # fmt: skip
def test_layer_lists_and_ranges(spec, layers):
    assert parse_layers(spec) == layers


@pytest.mark.parametrize(
    "layer, fragments",
    [("1,1", ["twice"]), ("3-1", ["empty range"]), ("1-x", ["cannot read"]),
     ("1,9", ["out of range"])],
)  # fmt: skip
def test_bad_layer_lists_are_one_line_errors(
    tiny_model_dir, tiny_corpus, tmp_path, layer, fragments
):
    args = depth_args(tiny_model_dir, tiny_corpus, tmp_path / "x", layer)
    assert_one_line_error(invoke(*args), *fragments)


def test_several_depths_from_a_cache_is_a_one_line_error(tiny_model_dir, tiny_corpus, tmp_path):
    args = depth_args(tiny_model_dir, tiny_corpus, tmp_path / "x", "1,2")
    assert_one_line_error(invoke(*args, "--activations", tmp_path), "--activations", "one hook")
