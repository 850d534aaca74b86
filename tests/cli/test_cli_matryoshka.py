"""`steer train --matryoshka`: levels as SAEs of their own (`DIR@m`), eval of every level,
Ctrl-C and --resume to the same weights."""

import json

from builders import (
    assert_one_line_error,
    assert_same_sae,
    ctrl_c_in_training,
    invoke,
    tiny_train_args,
)


def matryoshka_args(model_dir, corpus, out, levels="32,128"):
    args = tiny_train_args(model_dir, corpus, out, k="4")
    return [*args, "--matryoshka", levels, "--optimizer", "signum"]


def test_matryoshka_trains_resumes_and_evaluates_every_level(tiny_model_dir, tiny_corpus, tmp_path):
    straight = tmp_path / "straight"
    result = invoke(*matryoshka_args(tiny_model_dir, tiny_corpus, straight))
    assert result.exit_code == 0, result.output
    assert [p.name for p in straight.iterdir() if (p / "cfg.json").is_file()] == ["128-k4"]
    cfg = json.loads((straight / "128-k4" / "cfg.json").read_text())
    assert cfg["matryoshka"] == [32, 128] and "--matryoshka 32,128" in cfg["extra"]["command"]

    out = tmp_path / "run"
    args = matryoshka_args(tiny_model_dir, tiny_corpus, out)
    with ctrl_c_in_training(at_step=5):
        assert invoke(*args).exit_code == 130
    other = matryoshka_args(tiny_model_dir, tiny_corpus, out, levels="64,128")
    assert_one_line_error(invoke(*other, "--resume"), "cannot resume", "matryoshka")
    assert invoke(*args, "--resume").exit_code == 0
    for path in ("128-k4", "128-k4@32"):
        assert_same_sae(out / path, straight / path)

    common = ["--json", "--split", "all", "--tokens", "200", "--device", "cpu"]
    result = invoke("eval", "--sae", straight, *common)
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert set(metrics) == {"128-k4@32", "128-k4"}
    assert metrics["128-k4@32"]["n_latents"] == 32 and metrics["128-k4"]["n_latents"] == 128
    assert metrics["128-k4@32"]["fvu"] > metrics["128-k4"]["fvu"] > 0
    one = json.loads(invoke("eval", "--sae", f"{straight / '128-k4'}@32", *common).stdout)
    assert list(one) == ["128-k4@32"] and one["128-k4@32"]["fvu"] == metrics["128-k4@32"]["fvu"]
    assert_one_line_error(
        invoke("eval", "--sae", f"{straight / '128-k4'}@48", *common), "not a level"
    )


def test_bad_levels_are_one_line_errors(tiny_model_dir, tiny_corpus, tmp_path):
    for levels, fragment in (("2,128", "smaller than k=4"), ("64,32", "increasing")):
        args = matryoshka_args(tiny_model_dir, tiny_corpus, tmp_path / levels, levels)
        assert_one_line_error(invoke(*args), fragment)
