"""Schedule-free SignSGD (sae/optim.py): the averaged and training weights, and convergence."""

from __future__ import annotations

import pytest
import torch

from sae.optim import ScheduleFreeSignSGD, default_signum_lr


def _quadratic_step(opt, w, target):
    opt.zero_grad()
    (w - target).pow(2).sum().backward()
    opt.step()


def test_converges_on_a_quadratic_and_the_average_is_closer_than_the_iterate():
    target = torch.linspace(-1, 1, 8)
    w = torch.nn.Parameter(torch.zeros(8))
    opt = ScheduleFreeSignSGD([w], lr=0.05)
    for _ in range(300):
        _quadratic_step(opt, w, target)
    y_err = (w.detach() - target).abs().max()
    opt.eval()
    x_err = (w.detach() - target).abs().max()
    assert x_err < 0.02  # sign steps of 0.05 alone would keep oscillating at ~0.05
    assert x_err < y_err
    with pytest.raises(RuntimeError, match="train"):
        _quadratic_step(opt, w, target)  # stepping from the average is refused
    opt.train()
    _quadratic_step(opt, w, target)


def test_average_weights_restores_the_training_weights_bit_for_bit():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(5, 3))
    opt = ScheduleFreeSignSGD([w], lr=0.01)
    for _ in range(7):
        _quadratic_step(opt, w, torch.ones(5, 3))
    before = w.detach().clone()
    with opt.average_weights():
        assert not torch.equal(w.detach(), before)  # x, not y
        w.data.mul_(3)  # e.g. the decoder renormalisation done for a checkpoint
    assert torch.equal(w.detach(), before) and opt.train_mode


def test_state_dict_round_trip_continues_identically():
    target = torch.arange(4.0)
    runs = []
    for reload in (False, True):
        w = torch.nn.Parameter(torch.zeros(4))
        opt = ScheduleFreeSignSGD([w], lr=0.1)
        for step in range(10):
            if reload and step == 5:
                state = opt.state_dict()
                w = torch.nn.Parameter(w.detach().clone())
                opt = ScheduleFreeSignSGD([w], lr=0.1)
                opt.load_state_dict(state)
            _quadratic_step(opt, w, target)
        runs.append(w.detach().clone())
    assert torch.equal(runs[0], runs[1])


def test_default_lr_scales_with_width():
    assert default_signum_lr(2**14) == pytest.approx(2.5e-3)
    assert default_signum_lr(2**16) == pytest.approx(1.25e-3)
    with pytest.raises(ValueError):
        ScheduleFreeSignSGD([torch.nn.Parameter(torch.zeros(1))], lr=0)
