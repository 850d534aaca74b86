"""Matryoshka TopK SAEs: each prefix alone reconstructs, exact resume, `DIR@m`, export."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from sae import TopKSAE, export_sae, import_sae
from sae.matryoshka import nested_forward, prefix_sae, split_prefix
from sae.train.trainer import TrainConfig, Trainer

D_IN, N_PARENTS, N_CHILDREN = 16, 8, 4  # 8 broad directions, each with 4 refinements

pytestmark = pytest.mark.usefixtures("one_thread")


def _dictionaries():
    g = torch.Generator().manual_seed(7)
    parents = torch.randn(N_PARENTS, D_IN, generator=g)
    parents /= parents.norm(dim=1, keepdim=True)
    children = torch.randn(N_PARENTS, N_CHILDREN, D_IN, generator=g)
    children /= children.norm(dim=2, keepdim=True)
    return parents, children


PARENTS, CHILDREN = _dictionaries()


class TreeSource:
    """Known structure: each token is 2 broad features (strength 3..4) plus, for each, one
    of its 4 finer refinements (strength 0.5..1). Batch i depends only on i (resumable)."""

    def __init__(self, size=256):
        self.size, self.i = size, 0

    def state_dict(self):
        return {"i": self.i}

    def load_state_dict(self, state):
        self.i = state["i"]

    def __iter__(self):
        while True:
            g = torch.Generator().manual_seed(1000 + self.i)
            p = torch.stack([torch.randperm(N_PARENTS, generator=g)[:2] for _ in range(self.size)])
            c = torch.randint(0, N_CHILDREN, (self.size, 2), generator=g)
            big = torch.rand(self.size, 2, 1, generator=g) + 3.0
            small = torch.rand(self.size, 2, 1, generator=g) * 0.5 + 0.5
            x = (big * PARENTS[p] + small * CHILDREN[p, c]).sum(1)  # (N, d)
            self.i += 1
            yield x


def _cfg(**kw) -> TrainConfig:
    base = dict(
        widths=[48],
        ks=[2],
        batch_tokens=256,
        total_tokens=150 * 256,
        optimizer="signum",
        warmup_steps=5,
        geomedian_tokens=1024,
        log_every_steps=10,
        save_every_steps=1000,
        dead_after_tokens=2048,
        matryoshka=[8, 48],
    )
    base.update(kw)
    return TrainConfig(**base)


def _fvu(sae: TopKSAE, x: torch.Tensor) -> float:
    with torch.no_grad():
        x_hat = sae.decode(*sae.encode(x))
    return float((x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum())


def test_each_prefix_alone_reconstructs(tmp_path):
    matryoshka = Trainer(_cfg(), D_IN, tmp_path / "m")
    matryoshka.fit(TreeSource())
    plain = Trainer(_cfg(matryoshka=[]), D_IN, tmp_path / "p")
    plain.fit(TreeSource())
    x = next(iter(TreeSource(2048)))  # the first batches: seen in training, same for both

    m_sae, p_sae = matryoshka.saes["48-k2"], plain.saes["48-k2"]
    assert m_sae.cfg.matryoshka == [8, 48]
    small = TopKSAE.load(tmp_path / "m" / "48-k2@8")
    assert small.n_latents == 8 and small.k == 2
    # 8 latents, 2 active, can hold the 8 broad directions: the children's variance is what
    # is left (about 4%). A plain SAE's first 8 latents were never asked to stand alone.
    plain_first8 = prefix_sae(replace_levels(p_sae, [8, 48]), 8)
    assert _fvu(small, x) < 0.12
    assert _fvu(plain_first8, x) > 2 * _fvu(small, x) + 0.1
    # the full width stays a good SAE (children need the wider level)
    assert _fvu(TopKSAE.load(tmp_path / "m" / "48-k2"), x) < 0.08

    # the loss' level FVUs are the prefix SAEs' own FVUs (same encoder, same TopK)
    with torch.no_grad():
        out, levels = nested_forward(m_sae, x)
    assert levels.shape == (2,) and float(levels[1]) == pytest.approx(float(out.fvu))
    assert float(levels[0]) == pytest.approx(_fvu(small, x), rel=1e-3)


def replace_levels(sae: TopKSAE, levels: list[int]) -> TopKSAE:
    """A plain SAE relabelled as nested, to read its first latents as a prefix."""
    out = TopKSAE(replace(sae.cfg, matryoshka=levels))
    out.load_state_dict(sae.state_dict())
    return out


def _params(trainer):
    return {
        f"{n}/{p}": t.clone() for n, s in trainer.saes.items() for p, t in s.state_dict().items()
    }


@pytest.mark.parametrize("optimizer", ["adam", "signum"])
def test_resume_reproduces_uninterrupted_run(tmp_path, optimizer):
    cfg = _cfg(total_tokens=24 * 256, save_every_steps=5, log_every_steps=1, optimizer=optimizer)
    full = Trainer(cfg, D_IN, tmp_path / "full")
    full.fit(TreeSource())
    first = Trainer(cfg, D_IN, tmp_path / "cut")
    first.fit(TreeSource(), on_log=lambda r: r["step"] >= 11 and first.request_stop())
    assert first.step == 11
    resumed = Trainer(cfg, D_IN, tmp_path / "cut")
    assert resumed.fit(TreeSource(), resume=True)["steps"] == 24
    expected, got = _params(full), _params(resumed)
    for key in expected:
        assert torch.equal(got[key], expected[key]), key
    # other levels (or none) cannot resume this run
    with pytest.raises(ValueError, match="matryoshka levels"):
        Trainer(replace(cfg, matryoshka=[16, 48]), D_IN, tmp_path / "cut").fit(
            TreeSource(), resume=True
        )


def test_prefix_paths_and_errors(tmp_path):
    trainer = Trainer(_cfg(total_tokens=4 * 256), D_IN, tmp_path)
    trainer.fit(TreeSource())
    folder = tmp_path / "48-k2"
    assert split_prefix(f"{folder}@8") == (folder, 8)
    assert split_prefix(folder) == (folder, None)
    full = TopKSAE.load(folder)
    small = TopKSAE.load(f"{folder}@8")
    x = next(iter(TreeSource(64)))
    # prefix m encodes as TopK over the first m pre-activations of the full SAE
    pre = full.pre_acts(x)[:, :8]
    z = torch.zeros_like(pre).scatter_(1, *reversed(pre.topk(2, dim=1)))
    torch.testing.assert_close(small.encode_dense(x), z)
    assert small.cfg.extra["matryoshka_of"] == 48 and small.cfg.matryoshka == [8]
    for bad, msg in ((f"{folder}@9", "not a level"), (f"{tmp_path}/nowhere@8", "no SAE")):
        with pytest.raises(ValueError, match=msg):
            TopKSAE.load(bad)
    plain = Trainer(_cfg(matryoshka=[], total_tokens=256), D_IN, tmp_path / "plain")
    plain.fit(TreeSource())
    with pytest.raises(ValueError, match="not a Matryoshka SAE"):
        TopKSAE.load(tmp_path / "plain" / "48-k2@8")
    for bad in ([1, 48], [8, 8, 48], [8, 40]):
        with pytest.raises(ValueError):
            _cfg(matryoshka=bad)

    # a prefix exports to the other formats and imports back with the same outputs
    for fmt in ("sparsify", "saelens"):
        export_sae(small, tmp_path / fmt, fmt)
        back = import_sae(tmp_path / fmt)
        assert back.n_latents == 8
        torch.testing.assert_close(back.decode(*back.encode(x)), small.decode(*small.encode(x)))
    native = import_sae(f"{folder}@8")
    torch.testing.assert_close(native.W_dec, small.W_dec)
