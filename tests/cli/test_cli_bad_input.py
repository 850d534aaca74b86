"""Bad input never crashes: every case exits non-zero with one line naming the problem, no
traceback, and leaves nothing half-written. The table covers classes of mistakes (devices,
sizes that cannot fit, paths, malformed configs, options that would do nothing useful)."""

from __future__ import annotations

import json

import pytest
from builders import planted_sae
from conftest import make_tiny_lm
from typer.testing import CliRunner

from steer.cli.main import app

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ws(tiny_model_dir, tmp_path_factory):
    """A workspace: the tiny model, its SAE (native), a corpus, a file, a folder."""
    root = tmp_path_factory.mktemp("bad")
    sae = planted_sae(make_tiny_lm("llama"))
    sae.cfg.model_name = str(tiny_model_dir)
    sae.save(root / "sae")
    corpus = root / "corpus.jsonl"
    corpus.write_text(
        "".join(json.dumps({"text": f"The Golden Gate Bridge {i}."}) + "\n" for i in range(60))
    )
    (root / "afile").write_text("keep me\n")
    (root / "adir").mkdir()
    strings = root / "strings"
    strings.mkdir()
    cfg = json.loads((root / "sae" / "cfg.json").read_text())
    (strings / "cfg.json").write_text(json.dumps({**cfg, "n_latents": str(cfg["n_latents"])}))
    (strings / "sae.safetensors").write_bytes((root / "sae" / "sae.safetensors").read_bytes())
    (root / "badpreset.json").write_text(
        json.dumps(
            {"interventions": [{"latent": 3, "strength": 2}], "settings": {"max_new_tokens": "12"}}
        )
    )
    return {
        "root": root,
        "sae": root / "sae",
        "model": tiny_model_dir,
        "corpus": corpus,
        "afile": root / "afile",
        "adir": root / "adir",
        "strings": strings,
        "badpreset": root / "badpreset.json",
    }


GEN = ["generate", "--sae", "{sae}", "--prompt", "Hi", "-f", "0=2", "--max-tokens", "2"]
EVAL = ["eval", "--sae", "{sae}", "--corpus", "{corpus}", "--tokens", "200", "--ctx-len", "16"]
INDEX = ["index", "--sae", "{sae}", "--corpus", "{corpus}", "--tokens", "200", "--ctx-len", "16"]
TRAIN = ["train", "--model", "{model}", "--layer", "1", "--corpus", "{corpus}", "--tokens", "512",
         "--batch-tokens", "256", "--widths", "64", "-k", "4", "--out", "{root}/run"]  # fmt: skip

# (id, argv, words the one-line error must contain)
CASES = [
    # devices
    ("generate-no-cuda", [*GEN, "--device", "cuda:99"], "cuda"),
    ("generate-unknown-device", [*GEN, "--device", "tpu"], "--device"),
    ("eval-unknown-device", [*EVAL, "--device", "quantum"], "--device"),
    ("index-unknown-device", [*INDEX, "--device", "gpu0"], "--device"),
    (
        "features-unknown-device",
        ["features", "--sae", "{sae}", "hi", "--device", "x"],
        "--device",
    ),
    ("train-unknown-device", [*TRAIN, "--device", "npu"], "--device"),
    ("chat-unknown-device", ["chat", "--sae", "{sae}", "--device", "tpu"], "--device"),
    # sizes that cannot fit
    (
        "train-width-too-big",
        [*TRAIN[:-6], "--widths", "100000000000", "-k", "4", "--out", "{root}/run"],
        "memory",
    ),
    ("index-ctx-len-beyond-positions", [*INDEX[:-2], "--ctx-len", "100000"], "positions"),
    ("eval-ctx-len-beyond-positions", [*EVAL[:-2], "--ctx-len", "100000"], "positions"),
    ("train-ctx-len-beyond-positions", [*TRAIN, "--ctx-len", "5000"], "positions"),
    ("generate-huge-seed", [*GEN, "--seed", str(2**70)], "--seed"),
    ("generate-negative-seed", [*GEN, "--seed", "-1"], "--seed"),
    ("train-huge-seed", [*TRAIN, "--seed", str(2**64)], "--seed"),
    ("generate-max-tokens-beyond-positions", [*GEN[:-2], "--max-tokens", "100000"], "positions"),
    ("generate-max-tokens-zero", [*GEN[:-2], "--max-tokens", "0"], "max tokens"),
    ("index-tokens-zero", [*INDEX[:5], "--tokens", "0"], "--tokens"),
    ("index-batch-size-zero", [*INDEX, "--batch-size", "0"], "--batch-size"),
    ("index-contexts-zero", [*INDEX, "--contexts", "0"], "--contexts"),
    # paths
    ("index-out-is-a-file", [*INDEX, "--out", "{afile}"], "file"),
    ("train-out-is-a-file", [*TRAIN[:-2], "--out", "{afile}"], "file"),
    ("generate-save-preset-is-a-dir", [*GEN, "--save-preset", "{adir}"], "directory"),
    ("eval-hist-is-a-dir", [*EVAL, "--hist", "{adir}"], "directory"),
    ("generate-missing-preset", [*GEN, "--preset", "{root}/nope.json"], "nope.json"),
    (
        "generate-missing-sae",
        ["generate", "--sae", "{root}/nope", "--prompt", "x", "-f", "0=1"],
        "nope",
    ),
    ("index-missing-corpus", [*INDEX[:3], "--corpus", "{root}/nope.jsonl"], "nope.jsonl"),
    # malformed checkpoint configs and presets
    (
        "generate-cfg-strings",
        ["generate", "--sae", "{strings}", "--prompt", "x", "-f", "0=1"],
        "n_latents",
    ),
    ("eval-cfg-strings", [*EVAL[:1], "--sae", "{strings}", *EVAL[3:]], "n_latents"),
    ("features-cfg-strings", ["features", "--sae", "{strings}", "--id", "0"], "n_latents"),
    ("generate-preset-wrong-types", [*GEN, "--preset", "{badpreset}"], "preset"),
    # options that would silently do nothing useful
    ("eval-batch-contexts-zero", [*EVAL, "--batch-contexts", "0"], "--batch-contexts"),
    ("eval-dense-threshold-above-one", [*EVAL, "--dense-threshold", "5"], "--dense-threshold"),
    ("features-empty-search", ["features", "--sae", "{sae}", "--search", ""], "--search"),
    ("features-blank-search", ["features", "--sae", "{sae}", "--search", "   "], "--search"),
    (
        "train-multi-topk-4k-over-width",
        [*TRAIN[:-6], "--widths", "64", "-k", "20", "--multi-topk", "--out", "{root}/run"],
        "multi-topk",
    ),
    ("features-top-zero", ["features", "--sae", "{sae}", "hi", "--top", "0"], "--top"),
    ("generate-top-p-above-one", [*GEN, "--top-p", "2"], "top_p"),
    ("generate-negative-temperature", [*GEN, "--temperature", "-1"], "temperature"),
    ("generate-empty-prompt", ["generate", "--sae", "{sae}", "--prompt", "  "], "prompt"),
    ("generate-latent-out-of-range", [*GEN, "--feature", "99999=2"], "99999"),
    ("generate-bad-feature", [*GEN, "--feature", "bridge=2"], "bridge"),
]


@pytest.mark.parametrize("argv, words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gives_one_line(ws, argv, words):
    before = sorted(p.relative_to(ws["root"]) for p in ws["root"].rglob("*"))
    args = [a.format(**ws) for a in argv]
    result = runner.invoke(app, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert result.exit_code not in (0, None), result.output
    lines = result.stderr.strip().splitlines()
    assert (
        len(lines) == 1 and lines[0].startswith(("error: ", "Usage")) or "Error" in result.stderr
    ), result.stderr
    if lines[0].startswith("error: "):
        assert len(lines) == 1, result.stderr
    assert words.lower() in result.stderr.lower(), result.stderr
    assert "Traceback" not in result.output
    after = sorted(p.relative_to(ws["root"]) for p in ws["root"].rglob("*"))
    assert after == before, "files were written"
    assert ws["afile"].read_text() == "keep me\n"
