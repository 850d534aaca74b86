"""Import/export of the EleutherAI sparsify and SAELens TopK formats.

Round trips through our own code always run; the cross-checks with the real libraries run
where `sparsify` (pip: eai-sparsify) or `sae_lens` (pip: sae-lens) is importable."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from sae import SAEConfig, TopKSAE, detect_format, export_sae, import_sae

D, N, K = 16, 64, 4


pytestmark = pytest.mark.usefixtures("one_thread")


def trained_like_sae(scale=0.37, seed=0) -> TopKSAE:
    """An SAE with every parameter non-trivial, including the input scale."""
    torch.manual_seed(seed)
    sae = TopKSAE(
        SAEConfig(
            d_in=D, n_latents=N, k=K, input_scale=scale, hookpoint="resid_post.5", model_name="tiny"
        )
    )
    with torch.no_grad():
        sae.W_enc.add_(0.3 * torch.randn(N, D))
        sae.b_enc.normal_(0, 0.2)
        sae.b_pre.normal_(0, 1.0)
    return sae


def raw_inputs(sae: TopKSAE, n=50) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(n, D) * 3 / sae.cfg.input_scale + sae.b_pre.detach() / sae.cfg.input_scale


def assert_same_function(ours: TopKSAE, theirs: TopKSAE, x: torch.Tensor, acts_ratio: float = 1.0):
    """Same reconstruction and same latents (theirs = ours * acts_ratio) on x."""
    torch.testing.assert_close(
        theirs.decode(*theirs.encode(x)), ours.decode(*ours.encode(x)), rtol=1e-4, atol=1e-4
    )
    torch.testing.assert_close(
        theirs.encode_dense(x), ours.encode_dense(x) * acts_ratio, rtol=1e-4, atol=1e-5
    )


@pytest.mark.parametrize("fmt", ["native", "sparsify", "saelens"])
def test_round_trip_keeps_outputs(tmp_path, fmt):
    sae = trained_like_sae()
    export_sae(sae, tmp_path / fmt, fmt)
    assert detect_format(tmp_path / fmt) == fmt
    back = import_sae(tmp_path / fmt)
    x = raw_inputs(sae)
    if fmt == "native":
        assert back.cfg == sae.cfg
        assert_same_function(sae, back, x)
        return
    # Folded: input scale 1, latents in raw units (ours / s), reconstructions unchanged.
    assert back.cfg.input_scale == 1.0 and back.cfg.k == K and back.n_latents == N
    assert back.cfg.extra["imported_from"] == fmt
    assert_same_function(sae, back, x, acts_ratio=1 / sae.cfg.input_scale)
    # A second round trip is exact (nothing left to fold).
    export_sae(back, tmp_path / "again", fmt)
    again = import_sae(tmp_path / "again")
    for name, p in back.state_dict().items():
        assert torch.equal(again.state_dict()[name], p), name


def test_documented_layouts(tmp_path):
    sae = trained_like_sae()
    export_sae(sae, tmp_path / "sp", "sparsify")
    cfg = json.loads((tmp_path / "sp" / "cfg.json").read_text())
    assert cfg["num_latents"] == N and cfg["d_in"] == D and cfg["k"] == K
    assert {"expansion_factor", "normalize_decoder", "multi_topk"} <= set(cfg)
    from safetensors.torch import load_file

    t = load_file(str(tmp_path / "sp" / "sae.safetensors"))
    assert {k: tuple(v.shape) for k, v in t.items()} == {
        "encoder.weight": (N, D),
        "encoder.bias": (N,),
        "W_dec": (N, D),
        "b_dec": (D,),
    }
    export_sae(sae, tmp_path / "sl", "saelens")
    cfg = json.loads((tmp_path / "sl" / "cfg.json").read_text())
    assert (
        cfg["architecture"] == "topk" and cfg["d_sae"] == N and cfg["d_in"] == D and cfg["k"] == K
    )
    assert cfg["apply_b_dec_to_input"] is True and cfg["normalize_activations"] == "none"
    assert cfg["metadata"]["hook_name"] == "blocks.5.hook_resid_post"
    assert cfg["metadata"]["model_name"] == "tiny"
    t = load_file(str(tmp_path / "sl" / "sae_weights.safetensors"))
    assert {k: tuple(v.shape) for k, v in t.items()} == {
        "W_enc": (D, N),
        "b_enc": (N,),
        "W_dec": (N, D),
        "b_dec": (D,),
    }
    back = import_sae(tmp_path / "sl")
    assert back.cfg.hookpoint == "resid_post.5" and back.cfg.model_name == "tiny"


def _saelens_reference(x, W_enc, b_enc, W_dec, b_dec, k, apply_b_dec=True, rescale=False):
    """SAELens TopKSAE.forward, transcribed (topk of the pre-activations, then ReLU)."""
    pre = (x - b_dec * apply_b_dec) @ W_enc + b_enc
    if rescale:
        pre = pre * W_dec.norm(dim=-1)
    vals, idx = pre.topk(k, dim=-1)
    z = torch.zeros_like(pre).scatter(-1, idx, vals.relu())
    w = W_dec / W_dec.norm(dim=-1, keepdim=True) if rescale else W_dec
    return z @ w + b_dec


@pytest.mark.parametrize("apply_b_dec, rescale", [(True, False), (False, False), (True, True)])
def test_saelens_variants_import_exactly(tmp_path, apply_b_dec, rescale):
    g = torch.Generator().manual_seed(0)
    W_enc, b_enc = torch.randn(D, N, generator=g) * 0.3, torch.randn(N, generator=g) * 0.1
    W_dec, b_dec = torch.randn(N, D, generator=g), torch.randn(D, generator=g)
    save_file(
        {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec},
        str(tmp_path / "sae_weights.safetensors"),
    )
    cfg = {
        "architecture": "topk",
        "d_in": D,
        "d_sae": N,
        "k": K,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": apply_b_dec,
        "normalize_activations": "none",
        "rescale_acts_by_decoder_norm": rescale,
        "metadata": {
            "sae_lens_version": "6.5.0",
            "model_name": "gpt2",
            "hook_name": "blocks.3.hook_resid_post",
        },
    }
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    sae = import_sae(tmp_path)
    x = torch.randn(30, D, generator=g)
    ref = _saelens_reference(x, W_enc, b_enc, W_dec, b_dec, K, apply_b_dec, rescale)
    torch.testing.assert_close(sae.decode(*sae.encode(x)), ref, rtol=1e-4, atol=1e-4)
    assert sae.cfg.hookpoint == "resid_post.3" and sae.cfg.model_name == "gpt2"


def test_saelens_pre_6_config(tmp_path):
    sae = trained_like_sae(scale=1.0)
    export_sae(sae, tmp_path, "saelens")
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    old = {
        "d_in": D,
        "d_sae": N,
        "activation_fn_str": "topk",
        "activation_fn_kwargs": {"k": K},
        "apply_b_dec_to_input": True,
        "normalize_activations": False,
        "hook_point": "blocks.5.hook_resid_post",
        "model_name": "tiny",
        "dtype": cfg["dtype"],
    }
    (tmp_path / "cfg.json").write_text(json.dumps(old))
    back = import_sae(tmp_path)
    assert back.k == K and back.cfg.hookpoint == "resid_post.5"
    assert_same_function(sae, back, raw_inputs(sae))


def test_unsupported_and_broken_folders(tmp_path):
    with pytest.raises(ValueError, match="no SAE checkpoint folder"):
        import_sae(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="cfg.json is missing"):
        import_sae(tmp_path / "empty")
    # a run folder holding several SAEs: the error names them
    sae = trained_like_sae()
    sae.save(tmp_path / "run" / "64-k4")
    with pytest.raises(ValueError, match="64-k4"):
        import_sae(tmp_path / "run")
    # unknown layout
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "cfg.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(ValueError, match="known format"):
        import_sae(tmp_path / "odd")
    # SAELens unknown arch / a jumprelu without its thresholds / with normalisation;
    # sparsify transcoder
    export_sae(sae, tmp_path / "sl", "saelens")
    cfg = json.loads((tmp_path / "sl" / "cfg.json").read_text())
    for change, msg in [
        ({"architecture": "matryoshka_wide"}, "not supported"),
        ({"architecture": "jumprelu"}, "threshold is missing"),
        ({"d_sae": "64"}, "not an integer"),
        ({"normalize_activations": "expected_average_only_in"}, "scaling factor"),
    ]:
        (tmp_path / "sl" / "cfg.json").write_text(json.dumps({**cfg, **change}))
        with pytest.raises(ValueError, match=msg):
            import_sae(tmp_path / "sl")
    export_sae(sae, tmp_path / "sp", "sparsify")
    cfg = json.loads((tmp_path / "sp" / "cfg.json").read_text())
    (tmp_path / "sp" / "cfg.json").write_text(json.dumps({**cfg, "transcode": True}))
    with pytest.raises(ValueError, match="transcoder"):
        import_sae(tmp_path / "sp")
    (tmp_path / "sp" / "cfg.json").write_text(json.dumps({**cfg, "num_latents": 2 * N}))
    with pytest.raises(ValueError, match="shape"):
        import_sae(tmp_path / "sp")
    (tmp_path / "sp" / "cfg.json").write_text(json.dumps(cfg))
    data = (tmp_path / "sp" / "sae.safetensors").read_bytes()
    (tmp_path / "sp" / "sae.safetensors").write_bytes(data[:50])
    with pytest.raises(ValueError, match="corrupt"):
        import_sae(tmp_path / "sp")
    with pytest.raises(ValueError, match="unknown SAE format"):
        export_sae(sae, tmp_path / "x", "onnx")


def test_with_sparsify_library(tmp_path):
    """Our export loads in sparsify with the same outputs, and sparsify's files load in ours."""
    sparsify = pytest.importorskip("sparsify")
    ours = trained_like_sae()
    export_sae(ours, tmp_path / "ours", "sparsify")
    theirs = sparsify.SparseCoder.load_from_disk(tmp_path / "ours")
    x = raw_inputs(ours)
    with torch.no_grad():
        top_acts, top_idx, _ = theirs.encode(x)
        x_hat = theirs.decode(top_acts, top_idx)
    torch.testing.assert_close(x_hat, ours.decode(*ours.encode(x)), rtol=1e-4, atol=1e-4)
    dense = torch.zeros(len(x), N).scatter_(1, top_idx, top_acts)
    torch.testing.assert_close(
        dense, ours.encode_dense(x) / ours.cfg.input_scale, rtol=1e-4, atol=1e-5
    )

    torch.manual_seed(3)
    native = sparsify.SparseCoder(D, sparsify.SparseCoderConfig(num_latents=N, k=K))
    with torch.no_grad():
        native.encoder.bias.normal_(0, 0.1)
        native.b_dec.normal_()
    native.save_to_disk(tmp_path / "theirs")
    assert detect_format(tmp_path / "theirs") == "sparsify"
    imported = import_sae(tmp_path / "theirs")
    with torch.no_grad():
        out = native(x)
    torch.testing.assert_close(
        imported.decode(*imported.encode(x)), out.sae_out, rtol=1e-4, atol=1e-4
    )


def test_with_saelens_library(tmp_path):
    """Our export loads in SAELens with the same outputs, and SAELens's files load in ours."""
    sae_lens = pytest.importorskip("sae_lens")
    ours = trained_like_sae()
    export_sae(ours, tmp_path / "ours", "saelens")
    theirs = sae_lens.SAE.load_from_disk(str(tmp_path / "ours"))
    x = raw_inputs(ours)
    with torch.no_grad():
        torch.testing.assert_close(theirs(x), ours.decode(*ours.encode(x)), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(
            theirs.encode(x), ours.encode_dense(x) / ours.cfg.input_scale, rtol=1e-4, atol=1e-5
        )
    assert theirs.cfg.metadata.hook_name == "blocks.5.hook_resid_post"

    with torch.no_grad():
        theirs.b_enc.normal_(0, 0.1)
    theirs.save_model(str(tmp_path / "theirs"))
    imported = import_sae(tmp_path / "theirs")
    with torch.no_grad():
        torch.testing.assert_close(
            imported.decode(*imported.encode(x)), theirs(x), rtol=1e-4, atol=1e-4
        )
