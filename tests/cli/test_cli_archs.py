"""SAEs of other architectures, in SAELens's format (built in the test, no download), work
in every command that takes --sae: a JumpReLU (Gemma Scope style) and a standard ReLU SAE
steer in `steer generate`, read in `steer features`, index, evaluate, and open in `steer chat`."""

from __future__ import annotations

import json

import pytest
from builders import TEXTS, invoke, planted_sae, write_saelens_sae
from conftest import make_tiny_lm

from sae import load_sae
from steer.steering import Intervention
from steer.steering.generate import GenerationSettings, generate_text

pytestmark = pytest.mark.usefixtures("one_thread")
ARCHS = {"jumprelu": "jumprelu", "standard": "relu"}


@pytest.fixture(scope="module", params=list(ARCHS))
def arch_dir(request, tiny_model_dir, tmp_path_factory):
    """The planted SAE's directions (latent 0 reads " Bridge") as a SAELens checkpoint."""
    folder = tmp_path_factory.mktemp("saelens") / request.param
    write_saelens_sae(
        folder, request.param, planted_sae(make_tiny_lm("llama")), model_name=str(tiny_model_dir)
    )
    return folder


@pytest.mark.parametrize("feature, rows", [("0=40:add", "add"), ("0=25", "clamp")])
def test_generate_steers_with_the_archs_own_activation(arch_dir, feature, rows):
    result = invoke(
        "generate", "--sae", arch_dir, "-p", "The Golden Gate", "-f", feature,
        "--max-tokens", 6, "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["steered"] != out["baseline"]
    sae = load_sae(arch_dir)
    assert sae.arch == ARCHS[arch_dir.name]
    expected = generate_text(
        make_tiny_lm("llama"),
        sae,
        "The Golden Gate",
        [[], [Intervention(0, 40.0 if rows == "add" else 25.0, rows)]],
        GenerationSettings(max_new_tokens=6),
    )
    assert [out["baseline"], out["steered"]] == expected


def test_features_index_and_eval_read_the_arch(arch_dir, tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    by_text = invoke("features", "--sae", arch_dir, "The Golden Gate Bridge", "--json")
    assert by_text.exit_code == 0, by_text.output
    rows = json.loads(by_text.stdout)["features"]
    assert rows and rows[0]["feature"] == 0 and rows[0]["token"] == " Bridge"
    index = invoke("index", "--sae", arch_dir, "--corpus", corpus, "--tokens", 600, "--ctx-len", 16)
    assert index.exit_code == 0, index.output
    entry = json.loads(invoke("features", "--sae", arch_dir, "--id", 0, "--json").stdout)
    assert "Bridge" in json.dumps(entry)
    ev = invoke(
        "eval", "--sae", arch_dir, "--corpus", corpus, "--tokens", 300, "--ctx-len", 16, "--json"
    )
    assert ev.exit_code == 0, ev.output
    result = json.loads(ev.stdout)[arch_dir.name]
    assert 0 < result["l0"] < 64  # counts active latents, not the zero padding of the codes


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_chat_opens_the_arch(arch_dir, tiny_model_dir, tmp_path, anyio_backend):
    from steer.app.engine import PlaygroundEngine
    from steer.tui.app import PlaygroundApp

    app = PlaygroundApp(
        PlaygroundEngine(presets_dir=tmp_path), model=str(tiny_model_dir), sae_path=arch_dir
    )
    async with app.run_test(size=(100, 30)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert app.engine.has_sae and app.engine.sae.arch == ARCHS[arch_dir.name]
        assert ARCHS[arch_dir.name] in str(app.query_one("#status").render())
