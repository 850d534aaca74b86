"""TopKSAE: shapes, sparsity, sparse kernels vs dense autograd, persistence, geometric median."""

from __future__ import annotations

import pytest
import torch

import sae.kernels as sae_kernels
from sae import SAEConfig, TopKSAE, geometric_median, metrics

pytestmark = pytest.mark.usefixtures("one_thread")


def make_sae(d=16, n=64, k=4, dtype=torch.float32, seed=0, **cfg) -> TopKSAE:
    torch.manual_seed(seed)
    sae = TopKSAE(SAEConfig(d_in=d, n_latents=n, k=k, **cfg), dtype=dtype)
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.1)
        sae.b_pre.normal_()
    return sae


def test_shapes_and_exactly_k_nonzeros():
    sae = make_sae(input_scale=0.5)
    with torch.no_grad():
        sae.b_enc.fill_(100.0)  # every pre-activation positive: TopK must keep exactly k
    x = torch.randn(10, 16)
    top_acts, top_idx = sae.encode(x)
    assert top_acts.shape == top_idx.shape == (10, 4)
    dense = sae.encode_dense(x)
    assert dense.shape == (10, 64)
    assert ((dense != 0).sum(1) == 4).all()
    assert sae.pre_acts(x).shape == (10, 64)
    out = sae(x)
    assert out.x_hat.shape == (10, 16) and out.fvu.shape == ()
    assert ((out.top_acts > 0).sum(1) == 4).all()
    assert metrics.l0(dense).item() == 4.0


def test_decode_matches_dense_reference_in_raw_units():
    sae = make_sae(input_scale=2.5)
    sae.selection_dtype = torch.float32  # forward() chooses the TopK exactly like encode()
    x = torch.randn(20, 16)
    z = sae.encode_dense(x)  # (N, n) in SAE units
    ref = (z @ sae.W_dec + sae.b_pre) / 2.5
    x_hat = sae.decode(*sae.encode(x))
    torch.testing.assert_close(x_hat, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sae(x).x_hat, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sae.decoder_directions([3]), sae.W_dec[3:4] / 2.5)


@pytest.mark.parametrize("multi_topk", [False, True])
def test_sparse_backward_matches_dense_autograd(monkeypatch, multi_topk):
    """The fused encoder/decoder kernels give the same losses and gradients as autograd."""
    sae = make_sae(n=48, k=3, dtype=torch.float64, multi_topk=multi_topk, input_scale=1.7)
    x = torch.randn(40, 16, dtype=torch.float64)
    dead = torch.zeros(48, dtype=torch.bool)
    dead[::3] = True
    results = []
    for sparse in (True, False):
        if not sparse:
            monkeypatch.setattr(sae_kernels, "sparse_ok", lambda t: False)
        sae.zero_grad()
        out = sae(x, dead_mask=dead, k_aux=5)
        (out.fvu + out.auxk_loss + out.multi_topk_fvu).backward()
        losses = torch.stack([out.fvu, out.auxk_loss, out.multi_topk_fvu]).detach()
        results.append((losses, {n: p.grad.clone() for n, p in sae.named_parameters()}))
    (l_sparse, g_sparse), (l_dense, g_dense) = results
    torch.testing.assert_close(l_sparse, l_dense)
    assert l_sparse[1] > 0 and (l_sparse[2] > 0) == multi_topk
    for name in g_dense:
        torch.testing.assert_close(g_sparse[name], g_dense[name], msg=name)


def test_fp32_sparse_path_matches_dense_autograd(monkeypatch):
    sae = make_sae(n=48, k=3)
    sae.selection_dtype = torch.float32
    x = torch.randn(40, 16)
    dead = torch.arange(48) % 4 == 0
    grads = []
    for sparse in (True, False):
        if not sparse:
            monkeypatch.setattr(sae_kernels, "sparse_ok", lambda t: False)
        sae.zero_grad()
        out = sae(x, dead_mask=dead)
        (out.fvu + out.auxk_loss).backward()
        grads.append({n: p.grad.clone() for n, p in sae.named_parameters()})
    for name in grads[1]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("multi_topk", [False, True])
def test_bf16_selection_keeps_exact_values(multi_topk):
    """The TopK may be chosen on bf16 pre-activations; the values are the fp32 ones."""
    sae = make_sae(d=32, n=256, k=8, multi_topk=multi_topk)
    sae.selection_dtype = torch.bfloat16
    x = torch.randn(200, 32)
    out = sae(x)
    exact = sae.pre_acts(x)  # fp32
    torch.testing.assert_close(out.top_acts, exact.gather(1, out.top_indices), rtol=1e-5, atol=1e-6)
    ref_idx = exact.topk(8, dim=-1).indices
    same = (out.top_indices.sort(1).values == ref_idx.sort(1).values).all(1).float().mean()
    assert same > 0.8  # rows whose whole TopK set matches a full-precision choice
    sae.selection_dtype = torch.float32
    torch.testing.assert_close(out.fvu, sae(x).fvu, rtol=0.02, atol=0)
    if multi_topk:  # the k kept of the 4k are the largest exact values, in order
        assert (out.top_acts[:, :-1] >= out.top_acts[:, 1:]).all()


def test_auxk_scaled_down_when_few_latents_are_dead():
    sae = make_sae(dtype=torch.float64)
    x = torch.randn(30, 16, dtype=torch.float64)
    dead = torch.zeros(64, dtype=torch.bool)
    dead[[1, 5]] = True
    out = sae(x, dead_mask=dead, k_aux=8)
    # Both dead latents take part; the loss is scaled by num_dead / k_aux = 2/8.
    x_n = sae.normalize(x)
    pre = sae.pre_acts(x)[:, [1, 5]]
    e_hat = pre @ sae.W_dec[[1, 5]]
    err = x_n - (out.x_hat * sae.cfg.input_scale)
    total = (x_n - x_n.mean(0)).pow(2).sum()
    expected = 0.25 * (e_hat - err).pow(2).sum() / total
    torch.testing.assert_close(out.auxk_loss.detach(), expected)
    assert sae(x, dead_mask=torch.zeros(64, dtype=torch.bool)).auxk_loss.item() == 0.0


def test_decoder_constraints():
    sae = make_sae()
    sae(torch.randn(8, 16)).fvu.backward()
    sae.remove_gradient_parallel_to_decoder()
    dot = (sae.W_dec.grad * sae.W_dec).sum(1)
    assert dot.abs().max() < 1e-6
    with torch.no_grad():
        sae.W_dec.mul_(3.0)
    sae.set_decoder_norm_to_unit()
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(64))


def test_save_load_round_trip_bit_exact(tmp_path):
    sae = make_sae(
        input_scale=0.37, hookpoint="resid_post.3", model_name="tiny", extra={"tokens": 5}
    )
    sae.save(tmp_path / "a")
    loaded = TopKSAE.load(tmp_path / "a")
    assert loaded.cfg == sae.cfg
    for name, p in sae.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], p), name
    x = torch.randn(5, 16)
    assert torch.equal(loaded.decode(*loaded.encode(x)), sae.decode(*sae.encode(x)))
    assert not list(tmp_path.glob("a/.*tmp"))  # atomic writes leave no temp files


def test_corrupt_checkpoints_raise_value_error(tmp_path):
    sae = make_sae()
    sae.save(tmp_path / "ok")
    with pytest.raises(ValueError, match="no SAE checkpoint"):
        TopKSAE.load(tmp_path / "missing")
    # truncated weights
    (tmp_path / "trunc").mkdir()
    (tmp_path / "trunc" / "cfg.json").write_bytes((tmp_path / "ok" / "cfg.json").read_bytes())
    data = (tmp_path / "ok" / "sae.safetensors").read_bytes()
    (tmp_path / "trunc" / "sae.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt"):
        TopKSAE.load(tmp_path / "trunc")
    # garbage config
    (tmp_path / "trunc" / "cfg.json").write_text("{not json")
    with pytest.raises(ValueError, match="cannot read"):
        TopKSAE.load(tmp_path / "trunc")
    # config that does not match the tensors
    bad = make_sae(n=32)
    bad.save(tmp_path / "mismatch")
    (tmp_path / "mismatch" / "cfg.json").write_bytes((tmp_path / "ok" / "cfg.json").read_bytes())
    with pytest.raises(ValueError, match="shape"):
        TopKSAE.load(tmp_path / "mismatch")
    # NaN weights
    with torch.no_grad():
        sae.W_dec[0, 0] = float("nan")
    sae.save(tmp_path / "nan")
    with pytest.raises(ValueError, match="NaN"):
        TopKSAE.load(tmp_path / "nan")


def test_geometric_median_on_known_data():
    torch.manual_seed(0)
    center = torch.tensor([3.0, -2.0, 0.5, 1.0], dtype=torch.float64)
    offsets = torch.randn(200, 4, dtype=torch.float64)
    points = torch.cat([center + offsets, center - offsets])  # symmetric around center
    outliers = center + torch.full((40, 4), 1000.0, dtype=torch.float64)
    data = torch.cat([points, outliers])
    median = geometric_median(data)
    assert (median - center).norm() < 0.5  # the outliers move it a little...
    assert (data.mean(0) - center).norm() > 100  # ...and the mean a lot
    # Without outliers the symmetric centre is the exact minimiser.
    torch.testing.assert_close(geometric_median(points), center, atol=1e-5, rtol=0)
    # Three collinear points: the median is the middle one.
    line = torch.tensor([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]], dtype=torch.float64)
    torch.testing.assert_close(
        geometric_median(line, max_iter=2000, tol=1e-12), line[1], atol=1e-4, rtol=0
    )
    assert geometric_median(points.float()).dtype == torch.float32
    with pytest.raises(ValueError):
        geometric_median(torch.empty(0, 3))


def test_metrics_functions():
    x = torch.randn(100, 8)
    assert metrics.fvu(x, x).item() == 0.0
    torch.testing.assert_close(metrics.fvu(x, x.mean(0).expand_as(x)), torch.tensor(1.0))
    x_hat = x + 0.3 * torch.randn_like(x)
    batches = [(x[i : i + 32], x_hat[i : i + 32]) for i in range(0, 100, 32)]  # streamed
    sums = [sum(f(b, bh) for b, bh in batches) for f in (
        lambda b, bh: float((b - bh).double().pow(2).sum()),
        lambda b, bh: b.double().sum(0),
        lambda b, bh: float(b.double().pow(2).sum()),
    )]  # fmt: skip
    assert metrics.fvu_from_sums(*sums, 100) == pytest.approx(metrics.fvu(x, x_hat).item(), 1e-5)
    acts = torch.tensor([[1.0, 0.0], [2.0, 3.0]])
    idx = torch.tensor([[0, 1], [1, 3]])
    counts = metrics.firing_counts(acts, idx, 5)
    assert counts.tolist() == [1, 1, 0, 1, 0]
    freq = metrics.firing_frequency(counts, 2)
    assert metrics.dead_fraction(counts) == pytest.approx(0.4)
    assert metrics.dense_fraction(freq, threshold=0.4) == pytest.approx(0.6)
    hist, edges, n_dead = metrics.log_density_histogram(freq, bins=4, lo=-2, hi=0)
    assert n_dead == 2 and int(hist.sum()) == 3 and len(edges) == 5
    assert metrics.loss_recovered(2.0, 2.5, 7.0) == pytest.approx(0.9)
