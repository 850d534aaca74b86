"""Trainer: learning, AuxK, checkpoints, exact resume, NaN guard, bad states."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from sae import TopKSAE
from sae.optim import default_signum_lr
from sae.train.trainer import TrainConfig, Trainer, default_lr

D_IN, N_TRUE = 16, 64
_DICT = torch.randn(N_TRUE, D_IN, generator=torch.Generator().manual_seed(123))
_DICT /= _DICT.norm(dim=1, keepdim=True)


pytestmark = pytest.mark.usefixtures("one_thread")


class SparseSource:
    """Batches of 3-sparse combinations of a fixed unit dictionary, plus an offset.

    Resumable: batch i depends only on (seed, i). `sizes` cycles through batch sizes to
    exercise re-chunking; `nan_at` makes that batch index all-NaN."""

    def __init__(self, sizes=(256,), seed=0, nan_at=None):
        self.sizes, self.seed, self.nan_at = sizes, seed, nan_at
        self.i = 0

    def state_dict(self):
        return {"i": self.i, "seed": self.seed}

    def load_state_dict(self, state):
        self.i = state["i"]

    def __iter__(self):
        while True:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.i)
            n = self.sizes[self.i % len(self.sizes)]
            idx = torch.randint(0, N_TRUE, (n, 3), generator=g)
            acts = torch.rand(n, 3, generator=g) + 0.5
            x = torch.einsum("nk,nkd->nd", acts, _DICT[idx]) * 4.0 + 1.0
            if self.i == self.nan_at:
                x = torch.full_like(x, float("nan"))
            self.i += 1
            yield x


def small_cfg(**kw) -> TrainConfig:
    base = dict(
        widths=[64],
        ks=[4],
        batch_tokens=256,
        total_tokens=60 * 256,
        lr=3e-3,
        warmup_steps=5,
        geomedian_tokens=1024,
        log_every_steps=10,
        save_every_steps=1000,
        dead_after_tokens=1024,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_training_reduces_fvu_and_writes_layout(tmp_path):
    cfg = small_cfg(widths=[64, 128], ks=[4, 8], total_tokens=100 * 256)
    logs = []
    trainer = Trainer(
        cfg,
        D_IN,
        tmp_path,
        hookpoint="resid_post.1",
        model_name="synthetic",
        provenance={"command": "steer train --test"},
    )
    summary = trainer.fit(SparseSource(), on_log=logs.append)

    assert summary["stopped"] == "done"
    assert summary["steps"] == 100 and summary["tokens"] == 100 * 256
    assert set(summary["saes"]) == {"64-k4", "64-k8", "128-k4", "128-k8"}
    first, last = logs[0]["saes"], logs[-1]["saes"]
    for name, m in last.items():
        assert m["fvu"] < 0.5 * first[name]["fvu"], name
        assert m["l0"] == pytest.approx(int(name.split("-k")[1]))
        assert 0 <= m["dead_frac"] <= 1
        assert m["fvu"] < 0.4, name
    record = logs[-1]
    assert set(record) >= {"step", "tokens", "tokens_per_s", "lr", "saes"}
    assert set(record["saes"]["64-k4"]) >= {"fvu", "l0", "dead_frac", "auxk_loss"}

    # layout
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == list(range(10, 101, 10))
    assert (tmp_path / "train_state" / "state.safetensors").is_file()
    assert (tmp_path / "train_state" / "state.json").is_file()
    for name, sae in trainer.saes.items():
        assert summary["saes"][name]["path"] == str(tmp_path / name)
        loaded = TopKSAE.load(tmp_path / name)
        assert loaded.cfg.hookpoint == "resid_post.1" and loaded.cfg.model_name == "synthetic"
        assert loaded.cfg.extra["command"] == "steer train --test"
        assert loaded.cfg.extra["tokens"] == 100 * 256
        assert loaded.cfg.extra["metrics"]["fvu"] == pytest.approx(last[name]["fvu"])
        # decoder rows stay unit norm through training
        torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(sae.n_latents))
        for pname, p in sae.state_dict().items():
            assert torch.equal(loaded.state_dict()[pname], p)

    # initialisation: E||s·x||^2 = d_in on the sample, the same s for the whole family
    scales = {sae.cfg.input_scale for sae in trainer.saes.values()}
    assert len(scales) == 1
    sample = torch.cat([b for b, _ in zip(SparseSource(), range(4), strict=False)])
    s = scales.pop()
    assert (s * sample).pow(2).sum(1).mean().item() == pytest.approx(D_IN, rel=1e-4)


def test_lr_schedule_and_defaults():
    assert default_lr(2**14) == pytest.approx(2e-4)
    assert default_lr(2**16) == pytest.approx(1e-4)
    trainer = Trainer(
        small_cfg(total_tokens=100 * 256, warmup_steps=10, decay_fraction=0.2), D_IN, "unused"
    )
    f = [trainer.lr_factor(s) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == 1.0 and f[50] == 1.0
    assert f[80] == 1.0 and f[81] < 1.0 and f[99] == pytest.approx(1 / 20)
    assert all(a >= b for a, b in zip(f[10:], f[11:], strict=False))
    assert trainer.dead_after_tokens == 1024 and trainer.k_aux == D_IN // 2
    auto = Trainer(small_cfg(dead_after_tokens=None, lr=None), D_IN, "unused")
    assert auto.dead_after_tokens == 60 * 256 // 10  # scaled down for a short run
    tiny = Trainer(small_cfg(dead_after_tokens=None, total_tokens=2 * 256), D_IN, "unused")
    assert tiny.dead_after_tokens == 256  # ... but at least one batch
    assert auto.lrs["64-k4"] == pytest.approx(default_lr(64))


def test_signum_trains_faster_and_saves_the_average(tmp_path):
    """Schedule-free SignSGD at its default lr beats Adam at the same tokens on this data,
    and what is on disk is what the trainer holds at the end: unit-norm decoder rows."""
    fvu = {}
    for optimizer in ("adam", "signum"):
        cfg = small_cfg(optimizer=optimizer, lr=None, total_tokens=80 * 256)
        trainer = Trainer(cfg, D_IN, tmp_path / optimizer)
        fvu[optimizer] = trainer.fit(SparseSource())["saes"]["64-k4"]["fvu"]
    assert trainer.lrs["64-k4"] == pytest.approx(default_signum_lr(64))
    assert trainer.lr_factor(79) == 1.0  # no decay: the averaging takes its place
    assert fvu["signum"] < 0.8 * fvu["adam"]
    sae = trainer.saes["64-k4"]
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(64))
    loaded = TopKSAE.load(tmp_path / "signum" / "64-k4")
    for name, p in sae.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], p), name
    assert loaded.cfg.extra["train_config"]["optimizer"] == "signum"


def test_resume_with_another_optimizer_is_refused(tmp_path):
    Trainer(small_cfg(total_tokens=4 * 256), D_IN, tmp_path).fit(SparseSource())
    again = Trainer(small_cfg(total_tokens=8 * 256, optimizer="signum"), D_IN, tmp_path)
    with pytest.raises(ValueError, match="optimizer=adam"):
        again.fit(SparseSource(), resume=True)


def test_config_validation():
    with pytest.raises(ValueError, match="optimizer must be one of adam, signum"):
        TrainConfig(widths=[64], optimizer="sgd")
    with pytest.raises(ValueError, match="larger than width"):
        TrainConfig(widths=[16], ks=[32])
    with pytest.raises(ValueError, match="positive"):
        TrainConfig(widths=[64], batch_tokens=0)
    with pytest.raises(ValueError, match="repeat"):
        TrainConfig(widths=[64, 64])
    assert "geometric median" in TrainConfig.help()["geomedian_tokens"]


def test_auxk_revives_latents_that_stay_dead_without_it(tmp_path):
    dead_frac = {}
    for alpha in (0.0, 1 / 32):
        cfg = small_cfg(total_tokens=80 * 256, auxk_alpha=alpha, k_aux=8)
        trainer = Trainer(cfg, D_IN, tmp_path / str(alpha))
        with torch.no_grad():  # half the latents start with tiny encoder rows: never in the TopK
            trainer.saes["64-k4"].W_enc[:32] *= 0.02
        summary = trainer.fit(SparseSource())
        dead_frac[alpha] = summary["saes"]["64-k4"]["dead_frac"]
    assert dead_frac[0.0] >= 0.45
    assert dead_frac[1 / 32] <= 0.15


def test_multi_topk_trains(tmp_path):
    trainer = Trainer(small_cfg(multi_topk=True, total_tokens=20 * 256), D_IN, tmp_path)
    summary = trainer.fit(SparseSource())
    assert summary["stopped"] == "done"
    assert TopKSAE.load(tmp_path / "64-k4").cfg.multi_topk


def _params(trainer):
    return {
        f"{n}/{p}": t.clone()
        for n, sae in trainer.saes.items()
        for p, t in sae.state_dict().items()
    }


@pytest.mark.parametrize("optimizer", ["adam", "signum"])
def test_resume_reproduces_uninterrupted_run_exactly(tmp_path, optimizer):
    # Batches of odd sizes (re-chunked to 256), and a stop while batches taken for the
    # geometric median are still queued: both must survive the save/resume. With signum,
    # the periodic saves (which write the averaged weights) must not perturb training.
    cfg = small_cfg(
        widths=[32, 64],
        total_tokens=30 * 256,
        save_every_steps=7,
        log_every_steps=5,
        optimizer=optimizer,
    )
    sizes = (300, 200, 97)

    full = Trainer(cfg, D_IN, tmp_path / "full")
    full.fit(SparseSource(sizes))
    expected = _params(full)

    for stop_at in (2, 13):
        out = tmp_path / f"stop{stop_at}"
        first = Trainer(replace(cfg, log_every_steps=1), D_IN, out)  # callback sees every step

        def stop_when_reached(record, trainer=first, stop_at=stop_at):
            if record["step"] >= stop_at:
                trainer.request_stop()  # as a SIGINT handler would: next boundary saves + returns

        first_summary = first.fit(SparseSource(sizes), on_log=stop_when_reached)
        assert first_summary["stopped"] == "interrupted"
        assert first_summary["steps"] == stop_at

        resumed = Trainer(cfg, D_IN, out)
        summary = resumed.fit(SparseSource(sizes), resume=True)
        assert summary["stopped"] == "done" and summary["steps"] == 30
        assert summary["tokens"] == 30 * 256
        got = _params(resumed)
        for key in expected:
            assert torch.equal(got[key], expected[key]), (stop_at, key)
        for name in resumed.saes:
            assert torch.equal(resumed.since_fired[name], full.since_fired[name])
        steps = [
            json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()
        ]
        assert steps == sorted(steps) and len(steps) == len(set(steps))


def test_resume_errors(tmp_path):
    with pytest.raises(ValueError, match="nothing to resume"):
        Trainer(small_cfg(), D_IN, tmp_path / "none").fit(SparseSource(), resume=True)

    out = tmp_path / "run"
    Trainer(small_cfg(total_tokens=10 * 256), D_IN, out).fit(SparseSource())
    with pytest.raises(ValueError, match="cannot resume"):
        Trainer(small_cfg(widths=[64, 128]), D_IN, out).fit(SparseSource(), resume=True)
    with pytest.raises(ValueError, match="cannot resume"):
        Trainer(small_cfg(), D_IN + 1, out).fit(SparseSource(), resume=True)

    state = out / "train_state" / "state.safetensors"
    state.write_bytes(state.read_bytes()[:100])
    with pytest.raises(ValueError, match="corrupt training state"):
        Trainer(small_cfg(), D_IN, out).fit(SparseSource(), resume=True)
    (out / "train_state" / "state.json").write_text("{")
    with pytest.raises(ValueError, match="corrupt training state"):
        Trainer(small_cfg(), D_IN, out).fit(SparseSource(), resume=True)


def test_nan_guard_keeps_last_good_checkpoint(tmp_path):
    # Geomedian sample: batches 0-3 (trained at steps 1-4); batch 11 is NaN -> step 12 fails.
    cfg = small_cfg(total_tokens=40 * 256, save_every_steps=5)
    trainer = Trainer(cfg, D_IN, tmp_path)
    summary = trainer.fit(SparseSource(nan_at=11))
    assert summary["stopped"] == "nan"
    assert summary["steps"] == 11
    ckpt = TopKSAE.load(tmp_path / "64-k4")  # finite, or load would raise
    assert ckpt.cfg.extra["steps"] == 10
    assert json.loads((tmp_path / "train_state" / "state.json").read_text())["step"] == 10
    # the in-memory weights are the last good ones too (the bad step was not taken)
    assert all(torch.isfinite(p).all() for p in trainer.saes["64-k4"].parameters())
    assert summary["saes"]["64-k4"]["path"] == str(tmp_path / "64-k4")

    # resuming past the bad batch works from the kept checkpoint
    resumed = Trainer(cfg, D_IN, tmp_path).fit(SparseSource(nan_at=None), resume=True)
    assert resumed["stopped"] == "done" and resumed["steps"] == 40


def test_nan_before_any_checkpoint(tmp_path):
    summary = Trainer(small_cfg(), D_IN, tmp_path).fit(SparseSource(nan_at=5))
    assert summary["stopped"] == "nan" and summary["steps"] == 5
    assert summary["saes"]["64-k4"]["path"] is None


def test_bad_source(tmp_path):
    with pytest.raises(ValueError, match="no data"):
        Trainer(small_cfg(), D_IN, tmp_path).fit([])
    with pytest.raises(ValueError, match=r"\(N, 16\)"):
        Trainer(small_cfg(), D_IN, tmp_path / "b").fit([torch.zeros(10, 8)])
    # a finite source shorter than total_tokens ends the run cleanly
    batches = list(zip(range(12), SparseSource(), strict=False))
    summary = Trainer(small_cfg(), D_IN, tmp_path / "c").fit([b for _, b in batches])
    assert summary["stopped"] == "done" and summary["steps"] == 12
