"""`steer train` and `steer eval` end to end through typer's runner, and their bad inputs."""

import dataclasses
import inspect
import json
from pathlib import Path

import pytest
import torch
from builders import (
    assert_one_line_error,
    assert_same_sae,
    ctrl_c_in_training,
    invoke,
    tiny_train_args,
)
from conftest import requires_embedded

from sae import SAEConfig, TopKSAE
from steer.cli.main import app

SHARD = (
    Path(__file__).resolve().parents[3] / "shared" / "corpus" / "wikipedia-en" / "wiki-00.jsonl.xz"
)


def test_train_then_eval(tiny_model_dir, tiny_corpus, tmp_path):
    out = tmp_path / "run"
    result = invoke(*tiny_train_args(tiny_model_dir, tiny_corpus, out))
    assert result.exit_code == 0, result.output
    names = {"64-k4", "64-k8", "128-k4", "128-k8"}  # 4x of d_model=32 is 128
    assert {p.name for p in out.iterdir() if (p / "cfg.json").is_file()} == names
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records and set(records[-1]["saes"]) == names
    assert records[-1]["tokens"] == 2000 // 128 * 128  # whole batches
    cfg = json.loads((out / "64-k8" / "cfg.json").read_text())
    assert cfg["hookpoint"] == "resid_post.1" and cfg["model_name"] == str(tiny_model_dir)
    assert "steer train --model" in json.dumps(cfg["extra"])  # the command line, for provenance
    assert "64-k8" in result.stdout  # the summary table

    hist = tmp_path / "density.png"
    result = invoke(
        "eval",
        "--sae",
        out,
        "--json",
        "--split",
        "all",
        "--tokens",
        "300",
        "--hist",
        hist,
        "--device",
        "cpu",
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert set(metrics) == names
    for m in metrics.values():
        assert m["hookpoint"] == "resid_post.1" and m["tokens"] >= 300
        assert 0 < m["fvu"] < 1.5 and 0 < m["l0"] <= m["k"]
        assert 0 <= m["dead_frac"] <= 1 and 0 <= m["dense_frac"] <= 1
        for key in ("delta_loss", "loss_recovered", "kl", "ce_clean", "ce_sae", "ce_zero"):
            assert isinstance(m[key], float), key
    assert hist.read_bytes()[:4] == b"\x89PNG"

    # One checkpoint, human table, default split: the held-out documents of the training corpus.
    result = invoke("eval", "--sae", out / "128-k8", "--tokens", "100", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "128-k8" in result.stdout and "FVU" in result.stdout and "heldout" in result.stdout


def test_interrupted_run_resumes_to_the_same_weights(tiny_model_dir, tiny_corpus, tmp_path):
    # Reference: one uninterrupted run.
    straight = tmp_path / "straight"
    assert invoke(*tiny_train_args(tiny_model_dir, tiny_corpus, straight)).exit_code == 0

    # Ctrl-C (a real SIGINT to this process) a few steps in.
    out = tmp_path / "run"
    args = tiny_train_args(tiny_model_dir, tiny_corpus, out)
    with ctrl_c_in_training(at_step=5):
        result = invoke(*args)
    assert result.exit_code == 130, result.output
    assert "Traceback" not in result.output
    assert "--resume" in result.stderr and "interrupted" in result.stderr
    assert (out / "train_state").exists()

    # Without --resume the folder is protected; a resume must read the same activations.
    assert_one_line_error(invoke(*args), "--resume")
    other_layer = tiny_train_args(tiny_model_dir, tiny_corpus, out, layer="resid_post.2")
    assert_one_line_error(invoke(*other_layer, "--resume"), "cannot resume", "resid_post.1")
    result = invoke(*args, "--resume")
    assert result.exit_code == 0, result.output
    for name in ("64-k4", "128-k8"):
        assert_same_sae(out / name, straight / name)


@pytest.mark.parametrize(
    "change, fragments",
    [
        ({"--model": "no-such-org/no-such-model"}, ["cannot load model"]),
        ({"--layer": "4"}, ["out of range", "4 blocks"]),
        ({"--layer": "mlp_out.1"}, ["unknown hook point"]),
        ({"--widths": "16", "--k": "32"}, ["k=32", "width 16"]),
        ({"--tokens": "lots"}, ["--tokens"]),
        ({"--dtype": "int3"}, ["--dtype"]),
        ({"--corpus": "EMPTY"}, ["no text"]),
        ({"--corpus": "MISSING"}, ["does not exist"]),
        ({"--corpus": None}, ["no corpus"]),
        ({"--optimizer": "sgd"}, ["--optimizer", "adam, signum"]),
    ],
)
def test_train_bad_input_is_one_line_error(
    change, fragments, tiny_model_dir, tiny_corpus, tmp_path, monkeypatch
):
    monkeypatch.delenv("STEER_CORPUS", raising=False)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    args = tiny_train_args(tiny_model_dir, tiny_corpus, tmp_path / "run")
    for flag, value in change.items():
        if flag not in args:
            args += [flag, ""]
        i = args.index(flag)
        if value is None:
            del args[i : i + 2]
        else:
            args[i + 1] = {"EMPTY": empty, "MISSING": tmp_path / "missing.jsonl"}.get(value, value)
    assert_one_line_error(invoke(*args), *fragments)
    assert not (tmp_path / "run").exists()  # nothing written before the inputs check out


def test_signum_optimizer_trains_and_a_resume_must_keep_it(tiny_model_dir, tiny_corpus, tmp_path):
    out = tmp_path / "run"
    args = tiny_train_args(tiny_model_dir, tiny_corpus, out, tokens="1k")
    result = invoke(*args, "--optimizer", "signum")
    assert result.exit_code == 0, result.output
    cfg = json.loads((out / "64-k4" / "cfg.json").read_text())
    assert cfg["extra"]["optimizer"] == "signum" and "--optimizer signum" in cfg["extra"]["command"]
    more = [a if a != "1k" else "2k" for a in args]
    assert_one_line_error(invoke(*more, "--resume"), "cannot resume", "optimizer")
    assert invoke(*more, "--optimizer", "signum", "--resume").exit_code == 0


def test_without_model_trains_on_the_default_model(
    tiny_model_dir, tiny_corpus, tmp_path, monkeypatch
):
    from steer.lm import models

    # default_training_model() answers gpt2 online; here it names the tiny model instead.
    monkeypatch.setattr(models, "default_training_model", lambda: str(tiny_model_dir))
    args = tiny_train_args(tiny_model_dir, tiny_corpus, tmp_path / "run", tokens="512")
    i = args.index("--model")
    del args[i : i + 2]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert f"no --model given: training on {tiny_model_dir}" in result.stderr


def test_resume_without_a_run_is_an_error(tiny_model_dir, tiny_corpus, tmp_path):
    args = tiny_train_args(tiny_model_dir, tiny_corpus, tmp_path / "run")
    assert_one_line_error(invoke(*args, "--resume"), "nothing to resume")


def save_sae(folder, d_in=32, hookpoint="resid_post.1", model_name=""):
    TopKSAE(SAEConfig(d_in, 64, 4, hookpoint=hookpoint, model_name=model_name)).save(folder)
    return folder


def test_eval_bad_input_is_one_line_error(tiny_model_dir, tiny_corpus, tmp_path):
    model = str(tiny_model_dir)
    common = ["--corpus", tiny_corpus, "--split", "all", "--tokens", "50", "--device", "cpu"]

    corrupt = save_sae(tmp_path / "corrupt", model_name=model)
    (corrupt / "sae.safetensors").write_bytes(b"\x00garbage" * 10)
    assert_one_line_error(invoke("eval", "--sae", corrupt, *common), "corrupt")

    broken_cfg = save_sae(tmp_path / "badcfg", model_name=model)
    (broken_cfg / "cfg.json").write_text("{not json")
    assert_one_line_error(invoke("eval", "--sae", broken_cfg, *common), "cfg.json")

    wrong_d = save_sae(tmp_path / "wrong-d", d_in=16, model_name=model)
    assert_one_line_error(invoke("eval", "--sae", wrong_d, *common), "d_in=16", "d_model=32")

    good = save_sae(tmp_path / "good", model_name=model)
    assert_one_line_error(invoke("eval", "--sae", good, "--layer", "9", *common), "out of range")
    assert_one_line_error(
        invoke("eval", "--sae", tmp_path / "nowhere", *common), "no SAE checkpoint"
    )
    assert_one_line_error(
        invoke("eval", "--sae", good, "--model", "no-such-org/x", *common), "cannot load model"
    )

    no_hook = save_sae(tmp_path / "nohook", hookpoint="", model_name=model)
    assert_one_line_error(invoke("eval", "--sae", no_hook, *common), "--layer")
    no_corpus = save_sae(tmp_path / "nocorpus", model_name=model)
    assert_one_line_error(invoke("eval", "--sae", no_corpus, "--device", "cpu"), "--corpus")


def test_eval_reads_a_sparsify_checkpoint(tiny_model_dir, tiny_corpus, tmp_path):
    from sae import export_sae

    export_sae(TopKSAE(SAEConfig(32, 64, 4)), tmp_path / "layers.1", "sparsify")
    common = ["--model", tiny_model_dir, "--corpus", tiny_corpus, "--tokens", "50", "--json"]
    assert_one_line_error(invoke("eval", "--sae", tmp_path / "layers.1", *common), "--layer")
    result = invoke("eval", "--sae", tmp_path / "layers.1", "--layer", "1", *common)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["layers.1"]["split"] == "all"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error(tiny_model_dir, tiny_corpus, tmp_path):
    args = tiny_train_args(tiny_model_dir, tiny_corpus, tmp_path / "run")
    args[args.index("--device") + 1] = "cuda"
    assert_one_line_error(invoke(*args), "no CUDA device")


def test_help_defines_the_metrics():
    result = invoke("eval", "--help")
    assert result.exit_code == 0
    for text in (
        "FVU",
        "normalized MSE",
        "loss recovered",
        "CE_zero - CE_sae",
        "KL(p_clean || p_spliced)",
        "dead",
        "dense",
    ):
        assert text in result.stdout, text
    assert "--resume" in invoke("train", "--help").stdout


@requires_embedded
@pytest.mark.skipif(not SHARD.exists(), reason=f"shared corpus {SHARD} not present")
def test_real_run_on_the_embedded_model_lowers_fvu(tmp_path):
    out = tmp_path / "real"
    result = invoke(
        "train",
        "--layer",
        "3",
        "--corpus",
        SHARD,
        "--ctx-len",
        "64",
        "--widths",
        "2x",
        "--k",
        "32",
        "--batch-tokens",
        "1024",
        "--tokens",
        "30k",
        "--out",
        out,
        "--device",
        "cpu",
    )
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    fvus = [r["saes"]["1152-k32"]["fvu"] for r in records]
    assert fvus[-1] < 0.6 * fvus[0], fvus
    result = invoke(
        "eval", "--sae", out / "1152-k32", "--tokens", "1k", "--json", "--device", "cpu"
    )
    assert result.exit_code == 0, result.output
    m = json.loads(result.stdout)["1152-k32"]
    assert m["split"] == "heldout" and m["fvu"] < 0.6 * fvus[0]
    assert m["ce_clean"] < m["ce_sae"] < m["ce_zero"] and m["loss_recovered"] > 0.5


def test_train_option_help_is_the_train_config_docstring():
    import typer.main

    from sae.train.trainer import TrainConfig
    from steer.cli.train import CONFIG_FLAGS

    params = {p.opts[0]: p for p in typer.main.get_command(app).commands["train"].params}
    for field, flag in CONFIG_FLAGS.items():
        assert field in {f.name for f in dataclasses.fields(TrainConfig)}, field
        doc = " ".join(
            inspect.getsource(TrainConfig).split(f"    {field}:")[1].split('"""')[1].split()
        )
        assert params[flag].help.startswith(doc), (flag, params[flag].help)


def test_train_config_checks_are_worded_with_the_flags(tiny_model_dir, tiny_corpus, tmp_path):
    args = tiny_train_args(tiny_model_dir, tiny_corpus, tmp_path / "run")
    args[args.index("--save-every") + 1] = "0"
    assert_one_line_error(invoke(*args), "--save-every must be positive")
    assert not (tmp_path / "run").exists()
