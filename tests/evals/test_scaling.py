"""Scaling fits recover the coefficients of synthetic data made with known ones."""

import pytest
import torch

from steer.evals.scaling import JointFit, fit_joint, fit_power_law


def test_power_law_with_an_irreducible_term():
    n = torch.tensor([512.0, 1024, 2048, 4096, 8192, 16384])
    loss = 3.0 * n**-0.4 + 0.05
    fit = fit_power_law(n, loss)
    assert fit.alpha == pytest.approx(3.0, rel=0.02)
    assert fit.beta == pytest.approx(-0.4, abs=0.01)
    assert fit.irreducible == pytest.approx(0.05, abs=0.002)
    assert fit.r2 > 0.9999
    noisy = loss * (1 + 0.02 * torch.randn(6, generator=torch.Generator().manual_seed(0)))
    assert fit_power_law(n, noisy).r2 < fit.r2
    with pytest.raises(ValueError, match="3 widths"):
        fit_power_law([1, 2], [0.5, 0.4])


def test_joint_law_in_n_and_k():
    truth = JointFit(alpha=1.0, beta_k=-0.6, beta_n=-0.3, gamma=0.02, zeta=-3.0, eta=-0.1, r2=1)
    n, k = torch.meshgrid(
        torch.tensor([512.0, 1024, 2048, 4096, 8192]),
        torch.tensor([8.0, 16, 32, 64]),
        indexing="ij",
    )
    loss = truth(n.flatten(), k.flatten())
    fit = fit_joint(n.flatten(), k.flatten(), loss)
    assert fit.r2 > 0.9999
    torch.testing.assert_close(fit(n.flatten(), k.flatten()), loss, rtol=1e-3, atol=0)
    for name in ("alpha", "beta_k", "beta_n", "gamma", "zeta", "eta"):
        assert getattr(fit, name) == pytest.approx(getattr(truth, name), abs=0.05), name
