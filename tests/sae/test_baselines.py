"""Baseline architectures trained beside TopK: relu (L1), jumprelu (L0), batchtopk."""

from __future__ import annotations

import pytest
import torch
from test_sae_trainer import SparseSource, small_cfg

from sae import load_sae
from sae.formats import export_sae
from sae.train.baselines import _JumpReLU, _Step, batch_topk
from sae.train.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")


def test_batch_topk_keeps_the_k_n_largest_of_the_batch():
    acts = torch.tensor([[5.0, 0.1, 0.2], [4.0, 3.0, 0.3]])
    kept = batch_topk(acts, 1)  # 2 tokens x k=1: the two largest of the batch
    assert torch.equal(kept, torch.tensor([[5.0, 0, 0], [4.0, 0, 0]]))
    assert torch.equal(batch_topk(acts, 3), acts)


def test_straight_through_gradients_reach_the_threshold_near_it_only():
    pre = torch.tensor([[0.10, 0.50, 0.90]], requires_grad=True)
    theta = torch.tensor([0.11, 0.11, 0.11], requires_grad=True)
    _JumpReLU.apply(pre, theta, 0.05).sum().backward()
    # Only pre = 0.10 is within eps/2 of theta: d/dθ = -θ/ε there; pre gets H(pre - θ).
    torch.testing.assert_close(theta.grad, torch.tensor([-0.11 / 0.05, 0.0, 0.0]))
    torch.testing.assert_close(pre.grad, torch.tensor([[0.0, 1.0, 1.0]]))
    theta.grad = None
    _Step.apply(pre, theta, 0.05).sum().backward()
    torch.testing.assert_close(theta.grad, torch.tensor([-1 / 0.05, 0.0, 0.0]))


def test_every_arch_learns_its_knob_orders_sparsity_and_round_trips_saelens(tmp_path):
    cfg = small_cfg(
        archs=["topk", "batchtopk", "relu", "jumprelu"],
        ks=[4],
        l1_coeffs=[0.1, 0.3],
        l0_coeffs=[1e-3, 3e-2],
        total_tokens=150 * 256,
        lr=3e-3,
    )
    trainer = Trainer(cfg, 16, tmp_path)
    names = ["64-k4", "batchtopk-64-k4", "relu-64-l10.1", "relu-64-l10.3",
             "jumprelu-64-l00.001", "jumprelu-64-l00.03"]  # fmt: skip
    assert list(trainer.saes) == names
    result = trainer.fit(SparseSource())
    x = torch.cat([b for b, _ in zip(SparseSource(seed=9), range(4), strict=False)])  # held out
    l0, fvu = {}, {}
    for name in names:
        sae = load_sae(tmp_path / name)
        z = sae.encode_dense(x)
        l0[name] = float((z > 0).sum(1).float().mean())
        x_hat = sae.decode(*sae.encode(x)).detach()
        fvu[name] = float((x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum())
        assert fvu[name] < 0.5, (name, fvu[name], result["saes"][name])
        # SAELens round trip (input scale folded into the weights): same latents fire,
        # same reconstruction.
        export_sae(sae, tmp_path / "saelens" / name, fmt="saelens")
        back = load_sae(tmp_path / "saelens" / name)
        assert back.arch == sae.arch
        assert torch.equal(back.encode_dense(x) > 0, z > 0)
        torch.testing.assert_close(back.decode(*back.encode(x)), x_hat, atol=1e-4, rtol=1e-4)
    assert load_sae(tmp_path / "batchtopk-64-k4").arch == "jumprelu"  # as SAELens stores it
    assert 2 <= l0["batchtopk-64-k4"] <= 8  # k = 4 on average, through the inference threshold
    assert l0["relu-64-l10.3"] < l0["relu-64-l10.1"]  # more penalty, sparser
    assert l0["jumprelu-64-l00.03"] < l0["jumprelu-64-l00.001"]
    cfg_json = (tmp_path / "relu-64-l10.3" / "cfg.json").read_text()
    assert '"train_arch": "relu"' in cfg_json and '"sparsity_coeff": 0.3' in cfg_json
    relu = load_sae(tmp_path / "relu-64-l10.3")
    torch.testing.assert_close(relu.W_dec.norm(dim=1), torch.ones(64))  # folded on save


def test_baselines_resume_exactly(tmp_path):
    cfg = small_cfg(archs=["batchtopk", "relu", "jumprelu"], total_tokens=40 * 256,
                    save_every_steps=15)  # fmt: skip
    Trainer(cfg, 16, tmp_path / "a").fit(SparseSource())
    stopped = Trainer(cfg, 16, tmp_path / "b")
    seen = []

    def stop(record):
        seen.append(record["step"])
        if record["step"] >= 20:
            stopped.request_stop()

    stopped.fit(SparseSource(), on_log=stop)
    Trainer(cfg, 16, tmp_path / "b").fit(SparseSource(), resume=True)
    for name in ("batchtopk-64-k4", "relu-64-l11", "jumprelu-64-l00.001"):
        a, b = load_sae(tmp_path / "a" / name), load_sae(tmp_path / "b" / name)
        for key, tensor in a.state_dict().items():
            torch.testing.assert_close(b.state_dict()[key], tensor, msg=f"{name}.{key}")


def test_arch_config_errors():
    with pytest.raises(ValueError, match="archs must be"):
        small_cfg(archs=["gated"])
    with pytest.raises(ValueError, match="l1_coeffs"):
        small_cfg(archs=["relu"], l1_coeffs=[0.0])
    with pytest.raises(ValueError, match="topk only"):
        small_cfg(archs=["relu"], multi_topk=True)
