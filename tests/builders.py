"""Builders the test folders share: tiny SAEs, a planted-feature SAE, a playground engine.

Plain functions, not fixtures, so tests in any folder can call them with arguments
(`from builders import make_engine`); `conftest` holds the tiny models they build on.
"""

from __future__ import annotations

import functools

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
