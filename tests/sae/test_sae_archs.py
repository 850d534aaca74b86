"""Architectures besides TopK (relu, jumprelu, gated): SAELens checkpoints open and
compute what SAELens computes; codes stay sparse (acts, indices) for everything downstream."""

from __future__ import annotations

import os

import pytest
import torch
from builders import saelens_reference, write_saelens_sae

from sae import SAEConfig, TopKSAE, atomic_write, export_sae, load_sae

D, N = 16, 64
pytestmark = pytest.mark.usefixtures("one_thread")
SAELENS_ARCHS = {"standard": "relu", "jumprelu": "jumprelu", "gated": "gated"}


def topk_like(seed: int = 0) -> TopKSAE:
    torch.manual_seed(seed)
    sae = TopKSAE(SAEConfig(d_in=D, n_latents=N, k=4, hookpoint="resid_post.3", model_name="m"))
    with torch.no_grad():
        sae.b_enc.normal_(-0.3, 0.2)  # mostly negative: a sparse ReLU
        sae.b_pre.normal_(0, 0.5)
    return sae


def inputs(n: int = 40) -> torch.Tensor:
    return torch.randn(n, D, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("apply_b_dec", [True, False])
@pytest.mark.parametrize("theirs", list(SAELENS_ARCHS))
def test_saelens_archs_open_and_compute_like_saelens(tmp_path, theirs, apply_b_dec):
    t = write_saelens_sae(tmp_path, theirs, topk_like(), apply_b_dec=apply_b_dec)
    sae = load_sae(tmp_path)
    assert sae.arch == SAELENS_ARCHS[theirs] and sae.cfg.hookpoint == "resid_post.3"
    x = inputs()
    z_ref, x_hat_ref = saelens_reference(theirs, x, t, apply_b_dec)
    active = z_ref.gt(0).sum(-1)
    assert 0 < active.float().mean() < N / 2 and active.max() > 4  # sparse, not TopK-4
    torch.testing.assert_close(sae.encode_dense(x), z_ref, rtol=1e-5, atol=1e-5)
    acts, idx = sae.encode(x)  # (N, K): K = the most active latents of any token
    assert acts.shape[1] == int(active.max())
    torch.testing.assert_close(sae.decode(acts, idx), x_hat_ref, rtol=1e-4, atol=1e-4)
    # a few latents' activations cost a few rows, and agree with the dense codes
    some = [3, 0, 17]
    torch.testing.assert_close(sae.activations(x, some), z_ref[:, some], rtol=1e-5, atol=1e-5)
    out = sae(x)
    torch.testing.assert_close(out.x_hat, x_hat_ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("arch", ["relu", "jumprelu", "gated"])
def test_native_and_saelens_round_trips_keep_the_function(tmp_path, arch):
    """An arch SAE with input_scale != 1 survives save/load and SAELens export/import;
    fold_decoder_norms keeps its function."""
    write_saelens_sae(tmp_path / "src", {"relu": "standard"}.get(arch, arch), topk_like())
    sae = load_sae(tmp_path / "src")
    s = 2.5  # move to a normalised space: every pre-activation-scale quantity times s
    with torch.no_grad():
        for name in ("b_enc", "b_pre", "threshold", "b_mag"):
            if hasattr(sae, name):
                getattr(sae, name).mul_(s)
        sae.W_dec.mul_(torch.rand(N, generator=torch.Generator().manual_seed(2))[:, None] + 0.5)
    sae.cfg.input_scale = s
    x = inputs() / s
    expected = sae.decode(*sae.encode(x))
    sae.save(tmp_path / "native")
    export_sae(sae, tmp_path / "sl", "saelens")
    for back in (TopKSAE.load(tmp_path / "native"), load_sae(tmp_path / "sl")):
        assert back.arch == arch
        torch.testing.assert_close(back.decode(*back.encode(x)), expected, rtol=1e-4, atol=1e-4)
    sae.fold_decoder_norms()
    torch.testing.assert_close(sae.decode(*sae.encode(x)), expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="sparsify has no"):
        export_sae(sae, tmp_path / "sp", "sparsify")


def test_config_types_are_checked(tmp_path):
    (tmp_path / "cfg.json").write_text('{"d_in": "16", "n_latents": 64, "k": 4}')
    with pytest.raises(ValueError, match="d_in must be an integer, got '16'"):
        SAEConfig.from_json(tmp_path / "cfg.json")
    with pytest.raises(ValueError, match="unknown arch"):
        SAEConfig(d_in=D, n_latents=N, k=0, arch="sigmoid")
    with pytest.raises(ValueError, match="k must be in 1"):
        SAEConfig(d_in=D, n_latents=N, k=0)
    assert SAEConfig(d_in=D, n_latents=N, k=0, arch="jumprelu").k == 0
    # a topk cfg.json over a jumprelu's weights: the extra tensor is named, not a traceback
    sae = TopKSAE(SAEConfig(d_in=D, n_latents=N, k=0, arch="jumprelu"))
    sae.save(tmp_path / "j")
    (tmp_path / "j" / "cfg.json").write_text('{"d_in": 16, "n_latents": 64, "k": 4}')
    with pytest.raises(ValueError, match="threshold"):
        TopKSAE.load(tmp_path / "j")


def test_atomic_write_honours_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write(tmp_path / "f", lambda p: open(p, "w").write("x"))
        topk_like().save(tmp_path / "sae")
    finally:
        os.umask(old)
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "sae" / "sae.safetensors").stat().st_mode & 0o777 == 0o640
    with pytest.raises(ValueError, match="is a directory"):
        atomic_write(tmp_path / "sae", lambda p: None)
