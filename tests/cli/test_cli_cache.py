"""`steer cache` then `steer train --activations`: one model pass, many SAEs, resumable."""

import json

from builders import assert_same_sae, ctrl_c_in_training, invoke


def cache_args(model_dir, corpus, out, tokens="3k"):
    return ["cache", "--model", model_dir, "--layer", "1", "--corpus", corpus, "--ctx-len", "16",
            "--tokens", tokens, "--shard-tokens", "700", "--out", out, "--device", "cpu",
            "--dtype", "fp32", "--store-dtype", "fp32"]  # fmt: skip


def train_args(cache, out, tokens="2k"):
    return ["train", "--activations", cache, "--widths", "64,4x", "--k", "4,8",
            "--batch-tokens", "128", "--tokens", tokens, "--out", out, "--save-every", "4",
            "--device", "cpu"]  # fmt: skip


def test_cache_then_train_resume_and_eval(tiny_model_dir, tiny_corpus, tmp_path):
    cache = tmp_path / "cache"
    result = invoke(*cache_args(tiny_model_dir, tiny_corpus, cache))
    assert result.exit_code == 0, result.output
    meta = json.loads((cache / "cache.json").read_text())
    assert meta["tokens"] == 3000 and meta["hookpoint"] == "resid_post.1" and meta["d_in"] == 32
    assert len(meta["shards"]) == 5  # 4 x 700 + 200
    assert "steer train --activations" in result.stdout
    assert invoke(*cache_args(tiny_model_dir, tiny_corpus, cache)).exit_code == 1  # no overwrite

    # More tokens than the cache holds: a second, reshuffled pass.
    straight = tmp_path / "straight"
    result = invoke(*train_args(cache, straight, tokens="4k"))
    assert result.exit_code == 0, result.output
    cfg = json.loads((straight / "64-k8" / "cfg.json").read_text())
    assert cfg["hookpoint"] == "resid_post.1" and cfg["model_name"] == str(tiny_model_dir)
    assert cfg["extra"]["activations"] == str(cache.resolve())
    assert cfg["extra"]["tokens"] == 4000 // 128 * 128

    out = tmp_path / "run"
    with ctrl_c_in_training(at_step=9):
        assert invoke(*train_args(cache, out, tokens="4k")).exit_code == 130
    other = tmp_path / "other-cache"
    assert invoke(*cache_args(tiny_model_dir, tiny_corpus, other, tokens="1k")).exit_code == 0
    result = invoke(*train_args(other, out, tokens="4k"), "--resume")
    assert result.exit_code == 1 and "cannot resume" in result.stderr
    result = invoke(*train_args(cache, out, tokens="4k"), "--resume")
    assert result.exit_code == 0, result.output
    for name in ("64-k4", "128-k8"):
        assert_same_sae(out / name, straight / name)

    # steer eval finds the model and the held-out corpus through the cache's provenance.
    result = invoke("eval", "--sae", out / "64-k4", "--tokens", "100", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "heldout" in result.stdout


def test_train_activations_bad_input(tiny_model_dir, tiny_corpus, tmp_path):
    result = invoke(*train_args(tmp_path / "none", tmp_path / "o"))
    assert result.exit_code == 1 and "no activation cache" in result.stderr
    cache = tmp_path / "cache"
    assert invoke(*cache_args(tiny_model_dir, tiny_corpus, cache, tokens="500")).exit_code == 0
    result = invoke(*train_args(cache, tmp_path / "o"), "--layer", "2")
    assert result.exit_code == 1 and "holds resid_post.1" in result.stderr


def test_eval_with_probes_and_ablation(tiny_model_dir, tmp_path):
    from conftest import TINY_TEXT

    corpus = tmp_path / "long.jsonl"  # documents longer than a probe window (32 tokens)
    docs = [" ".join(TINY_TEXT[i % 6 :] + TINY_TEXT[: i % 6]) + f" ({i})" for i in range(60)]
    corpus.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    cache = tmp_path / "cache"
    assert invoke(*cache_args(tiny_model_dir, corpus, cache, tokens="1k")).exit_code == 0
    out = tmp_path / "run"
    assert invoke(*train_args(cache, out, tokens="1k")).exit_code == 0
    args = ["eval", "--sae", out, "--tokens", "100", "--device", "cpu", "--split", "all",
            "--probes", "--probe-examples", "8", "--ablation", "--ablation-contexts", "2",
            "--n2g", "--n2g-tokens", "600"]  # fmt: skip
    result = invoke(*args, "--json")
    assert result.exit_code == 0, result.output
    results = json.loads(result.stdout)
    assert set(results) == {"64-k4", "64-k8", "128-k4", "128-k8"}
    r = results["64-k4"]
    # The tiny corpus has no years or pronouns; the built tasks are always there.
    assert {"shuffled", "uppercase", "article_start"} <= set(r["probe_tasks"])
    assert 0 <= r["probe_loss"] < 2 and 0 <= r["probe_loss_residual"] < 2
    assert 1 <= r["ablation_sparsity"] <= r["ablation_horizon"] * 400
    assert 0 <= r["n2g_precision"] <= 1 and 0 <= r["n2g_recall"] <= 1 and r["n2g_latents"] > 0
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert (
        "probe" in result.stdout and "abl. sparsity" in result.stdout and "N2G P" in result.stdout
    )
    assert "chance 0.693" in result.stdout


def test_train_baseline_archs_on_cached_activations(tiny_model_dir, tiny_corpus, tmp_path):
    cache = tmp_path / "cache"
    assert invoke(*cache_args(tiny_model_dir, tiny_corpus, cache, tokens="1k")).exit_code == 0
    out = tmp_path / "run"
    args = ["train", "--activations", cache, "--widths", "64", "--k", "4", "--arch",
            "topk,batchtopk,relu,jumprelu", "--l1", "0.1,0.3", "--l0", "0.001",
            "--batch-tokens", "128", "--tokens", "1k", "--out", out, "--device", "cpu"]  # fmt: skip
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert "training 5 SAE(s)" in result.stderr
    names = {"64-k4", "batchtopk-64-k4", "relu-64-l10.1", "relu-64-l10.3", "jumprelu-64-l00.001"}
    assert {p.name for p in out.iterdir() if (p / "cfg.json").is_file()} == names
    result = invoke("eval", "--sae", out, "--tokens", "100", "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    assert set(json.loads(result.stdout)) == names
    bad = invoke(*[a if a != "topk,batchtopk,relu,jumprelu" else "topk,gated" for a in args])
    assert bad.exit_code == 1 and "--arch must be" in bad.stderr
