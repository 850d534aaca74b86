"""Builders the test folders share: tiny SAEs, a planted-feature SAE, a playground engine.

Plain functions, not fixtures, so tests in any folder can call them with arguments
(`from builders import make_engine`); `conftest` holds the tiny models they build on.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal

import pytest
import torch
from conftest import TINY_TEXT, make_tiny_lm

from sae import SAEConfig, TopKSAE
from steer.app.engine import PlaygroundEngine
from steer.steering.generate import GenerationSettings

# ---------------------------------------------------------------- the playground engine
ENGINE_LAYER = 1
PROMPT = "The Golden Gate"


def make_tiny_sae(seed: int = 0, n_latents: int = 64) -> TopKSAE:
    """A random TopK SAE on the tiny Llama's residual (d=32) after block 1."""
    torch.manual_seed(seed)
    cfg = SAEConfig(
        d_in=32,
        n_latents=n_latents,
        k=4,
        hookpoint=f"resid_post.{ENGINE_LAYER}",
        model_name="tiny-llama",
    )
    return TopKSAE(cfg)


@functools.lru_cache(maxsize=1)
def _catalog():
    from steer.features.catalog import build_catalog

    return build_catalog(
        make_tiny_lm("llama"),
        make_tiny_sae(),
        TINY_TEXT * 3,
        n_tokens=400,
        ctx_len=16,
        batch_size=8,
    )


def tiny_catalog():
    """A feature catalog of the tiny SAE (built once per test session: it takes a second)."""
    return _catalog()


def make_engine(tmp_path=None, catalog: bool = True, **settings) -> PlaygroundEngine:
    settings = {"max_new_tokens": 6, **settings}
    return PlaygroundEngine(
        make_tiny_lm("llama"),
        make_tiny_sae(),
        tiny_catalog() if catalog else None,
        settings=GenerationSettings(**settings),
        presets_dir=(tmp_path / "presets") if tmp_path else None,
    )


# ---------------------------------------------------------------- a planted feature
CATALOG_LAYER = 2
TEXTS = [f"{t} ({i})" for i in range(30) for t in TINY_TEXT]


def planted_sae(lm, token: str = " Bridge", n_latents: int = 64, k: int = 4) -> TopKSAE:
    """An SAE whose latent 0 reads a direction that fires on `token` only, and writes it."""
    tok = lm.tokenizer
    (planted,) = tok(token, add_special_tokens=False).input_ids
    ids = torch.tensor(tok(" ".join(TEXTS[:24]), add_special_tokens=False).input_ids[:250])
    with torch.inference_mode():
        x = lm.residual(ids[None], CATALOG_LAYER)[0, 1:]  # (T, d), first position skipped
    on = ids[1:] == planted
    assert on.sum() >= 2
    u = x[on].mean(0) - x[~on].mean(0)
    u = u / u.norm()
    proj = x @ u
    margin = float(proj[on].min() - proj[~on].max())
    assert margin > 0, "the planted token is not linearly separable"
    threshold = float(proj[~on].max()) + margin / 2
    torch.manual_seed(0)
    sae = TopKSAE(SAEConfig(lm.d_model, n_latents, k, hookpoint=f"resid_post.{CATALOG_LAYER}"))
    scale = 100.0 / margin
    with torch.no_grad():
        sae.W_enc[0] = u * scale
        sae.b_enc[0] = -threshold * scale
        sae.W_dec[0] = u
        sae.b_enc[1:] = 0.01
    return sae


# ---------------------------------------------------------------- SAELens checkpoints
def saelens_reference(arch: str, x, t: dict, apply_b_dec: bool = True):
    """SAELens's StandardSAE / JumpReLUSAE / GatedSAE encode, transcribed from its source:
    (dense codes (N, n), reconstruction (N, d)) for raw x (N, d) and its tensors t."""
    sae_in = x - t["b_dec"] * apply_b_dec
    if arch == "gated":
        gate = (sae_in @ t["W_enc"] + t["b_gate"]) > 0
        z = gate * torch.relu(sae_in @ (t["W_enc"] * t["r_mag"].exp()) + t["b_mag"])
    else:
        pre = sae_in @ t["W_enc"] + t["b_enc"]
        z = torch.relu(pre)
        if arch == "jumprelu":
            z = z * (pre > t["threshold"])
    return z, z @ t["W_dec"] + t["b_dec"]


def write_saelens_sae(
    folder,
    arch: str,
    like: TopKSAE,
    apply_b_dec: bool = True,
    seed: int = 0,
    model_name: str | None = None,
) -> dict:
    """A SAELens-format checkpoint (cfg.json + sae_weights.safetensors, as SAELens 6 saves
    it) of architecture "standard", "jumprelu" or "gated", written by hand (no SAELens,
    no download), reading the same directions as the TopK SAE `like` (input_scale 1).
    Thresholds sit at the median positive pre-activation, so the SAE is sparse but each
    latent fires sometimes. Returns the tensors."""
    import json
    from pathlib import Path

    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    n, d = like.n_latents, like.d_in
    W_enc = like.W_enc.detach().T.contiguous().clone()  # (d, n)
    t = {"W_enc": W_enc, "W_dec": like.W_dec.detach().clone(), "b_dec": like.b_pre.detach().clone()}
    b = like.b_enc.detach().clone()
    if not apply_b_dec:  # the same function, written SAELens's other way
        b = b - t["b_dec"] @ W_enc
    if arch == "gated":
        t["b_gate"] = b
        t["r_mag"] = 0.1 * torch.randn(n, generator=g)
        t["b_mag"] = b * t["r_mag"].exp() + 0.05
    else:
        t["b_enc"] = b
    if arch == "jumprelu":
        t["threshold"] = 0.05 + 0.1 * torch.rand(n, generator=g)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(t, str(folder / "sae_weights.safetensors"))
    hook = like.cfg.hookpoint.split(".")[-1]
    cfg = {
        "architecture": arch,
        "d_in": d,
        "d_sae": n,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": apply_b_dec,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {
            "sae_lens_version": "6.5.0",
            "model_name": model_name or like.cfg.model_name,
            "hook_name": f"blocks.{hook}.hook_resid_post",
            "hook_head_index": None,
            "prepend_bos": True,
        },
    }
    (folder / "cfg.json").write_text(json.dumps(cfg, indent=2))
    return t


# ---------------------------------------------------------------- the command line
def invoke(*args):
    """`steer ARGS` through typer's runner, exceptions not caught (a traceback fails the test)."""
    from typer.testing import CliRunner

    from steer.cli.main import app

    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def assert_one_line_error(result, *fragments):
    """The command failed (exit 1) with one line, `error: ...`, holding every fragment."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# ---------------------------------------------------------------- `steer train` runs
def tiny_train_args(model_dir, corpus, out, tokens="2k", layer="resid_post.1", k="4,8"):
    """`steer train` on the tiny model: widths 64 and 4x (128), a few steps of 128 tokens,
    saved every 4 steps; four SAEs (64-k4, 64-k8, 128-k4, 128-k8) with the default k."""
    return ["train", "--model", model_dir, "--layer", layer, "--corpus", corpus,
            "--ctx-len", "16", "--widths", "64,4x", "--k", k, "--batch-tokens", "128",
            "--tokens", tokens, "--out", out, "--save-every", "4", "--device", "cpu",
            "--dtype", "fp32"]  # fmt: skip


@contextlib.contextmanager
def ctrl_c_in_training(at_step: int = 5):
    """Inside the block, a training run gets a real SIGINT (Ctrl-C) to this process once it
    has logged step `at_step`; Trainer.fit is itself again after the block."""
    from sae.train import trainer as trainer_module

    original_fit = trainer_module.Trainer.fit

    def fit_with_ctrl_c(self, source, *, resume=False, on_log=None):
        def log(record):
            on_log(record)
            if record["step"] >= at_step:
                os.kill(os.getpid(), signal.SIGINT)

        return original_fit(self, source, resume=resume, on_log=log)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trainer_module.Trainer, "fit", fit_with_ctrl_c)
        yield


def assert_same_sae(folder, reference, exact: bool = False) -> None:
    """The SAE saved in `folder` has the weights of the one in `reference`: bit for bit
    with `exact`, else to float tolerance (torch.testing.assert_close)."""
    mine = TopKSAE.load(folder).state_dict()
    for key, tensor in TopKSAE.load(reference).state_dict().items():
        if exact:
            assert torch.equal(mine[key], tensor), f"{folder} {key}"
        else:
            torch.testing.assert_close(mine[key], tensor, msg=f"{folder}.{key}")


# ---------------------------------------------------------------- the TUI under Pilot
async def settle(pilot, rounds: int = 1) -> None:
    """Wait for the app's workers, then for the screen to catch up; `rounds` times (a
    worker's result can start another)."""
    for _ in range(rounds):
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
