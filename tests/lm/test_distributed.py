"""Data-parallel training (sae/distributed.py, steer/distributed.py) on CPU with gloo.

Two spawned processes (torch.multiprocessing, a FileStore rendezvous: no port to race
for) train the family one process trains with the same global batch and seed; a run
stopped by one rank, and one SIGKILLed after a checkpoint, resume to the uninterrupted
run's weights; a state written by two ranks resumes in one process (re-sharded data) or
says clearly that it cannot. The CLI test runs `steer train` under real torchrun.

Tolerance, two ranks vs one process: atol 1e-5 on every weight. The maths is the same
(sae/distributed.py weights each rank's gradient by its share of the batch variance);
only the order of floating-point sums differs. The TopK choice is made in fp32
(selection_dtype) so that the bf16 fast path, whose rounding depends on the GEMM shape,
cannot pick a different latent on a near tie.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from sae.state import load_state
from sae.train.distributed import DistributedTrainer
from sae.train.shards import rank_batch_tokens, saved_world_size
from sae.train.trainer import TrainConfig, Trainer

D_IN, N_TRUE, WORLD = 16, 64, 2
GLOBAL_BATCH = 255  # odd: ranks take 128 and 127 tokens
CFG = TrainConfig(
    widths=[32, 64],
    ks=[4],
    batch_tokens=GLOBAL_BATCH,
    total_tokens=24 * GLOBAL_BATCH,
    lr=3e-3,
    warmup_steps=3,
    geomedian_tokens=2 * GLOBAL_BATCH,
    log_every_steps=2,
    save_every_steps=4,
    dead_after_tokens=2 * GLOBAL_BATCH,
    k_aux=8,
)
TIMEOUT_S = 120


def _dictionary() -> torch.Tensor:
    d = torch.randn(N_TRUE, D_IN, generator=torch.Generator().manual_seed(123))
    return d / d.norm(dim=1, keepdim=True)


class RankSource:
    """Rank `rank`'s rows of global batch i (3-sparse codes of a fixed dictionary):
    concatenating the ranks' batches gives exactly one process's batch i.

    Resumable (state: next batch index), but not re-shardable (see ReshardableSource).
    Hooks for the tests: `on_batch(i)` before yielding batch i, `length` to end early,
    `nan_at`: batch index made all-NaN."""

    def __init__(self, rank=0, world=1, seed=0, on_batch=None, length=None, nan_at=None):
        self.rank, self.world, self.seed = rank, world, seed
        self.on_batch, self.length, self.nan_at = on_batch, length, nan_at
        self.start = sum(rank_batch_tokens(GLOBAL_BATCH, r, world) for r in range(rank))
        self.size = rank_batch_tokens(GLOBAL_BATCH, rank, world)
        self.dictionary = _dictionary()
        self.i = 0

    def state_dict(self):
        return {"i": self.i, "world_size": self.world}

    def load_state_dict(self, state):
        self.i = state["i"]

    def __iter__(self):
        while self.length is None or self.i < self.length:
            if self.on_batch is not None:
                self.on_batch(self.i)
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.i)
            idx = torch.randint(0, N_TRUE, (GLOBAL_BATCH, 3), generator=g)
            acts = torch.rand(GLOBAL_BATCH, 3, generator=g) + 0.5
            x = torch.einsum("nk,nkd->nd", acts, self.dictionary[idx]) * 4.0 + 1.0
            if self.i == self.nan_at:
                x = torch.full_like(x, float("nan"))
            self.i += 1
            yield x[self.start : self.start + self.size]


class ReshardableSource(RankSource):
    """Continues a run of another world size after the furthest batch any old rank took."""

    def load_sharded_state_dict(self, states):
        self.i = max(s["i"] for s in states)


def make_trainer(cls, out, cfg=CFG, fresh=True):
    trainer = cls(cfg, D_IN, out)
    for sae in trainer.saes.values():
        sae.selection_dtype = torch.float32
        if fresh:  # half the latents start with tiny encoder rows: AuxK and dead counts at work
            with torch.no_grad():
                sae.W_enc[: sae.n_latents // 2] *= 0.02
    return trainer


# ---------------------------------------------------------------------- worker processes
def _worker(rank: int, store: str, jobs: list, report: str) -> None:
    import faulthandler
    import gc

    import torch.distributed as dist

    faulthandler.enable()  # a native crash prints the Python stack (in the test's stderr)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    results = {}
    try:
        for job in jobs:
            kind, out = job["kind"], Path(job["out"])
            if kind == "copy":
                if rank == 0:
                    shutil.copytree(job["src"], out)
                dist.barrier()
                continue
            trainer = make_trainer(DistributedTrainer, out, fresh=kind == "train")
            on_batch, on_log, length, nan_at = None, None, None, None
            if job.get("stop_rank") == rank:  # request_stop on ONE rank: all must stop together

                def on_batch(i, t=trainer, at=job["stop_at"]):
                    if i == at:
                        t.request_stop()

            if job.get("kill_at") is not None and rank == 0:

                def on_log(record, at=job["kill_at"]):
                    if record["step"] >= at:
                        os.kill(os.getpid(), signal.SIGKILL)  # no save, no cleanup

            if job.get("short_rank") == rank:
                length = job["short_len"]
            if job.get("nan_rank") == rank:
                nan_at = job["nan_at"]
            source = RankSource(rank, WORLD, on_batch=on_batch, length=length, nan_at=nan_at)
            try:
                summary = trainer.fit(source, resume=job.get("resume", False), on_log=on_log)
                results[job["name"]] = {"summary": summary}
            except RuntimeError as err:
                results[job["name"]] = {"error": str(err)}
            results[job["name"]]["since_fired"] = {
                n: t.tolist() for n, t in trainer.since_fired.items()
            }
    except BaseException:
        Path(f"{report}.{rank}.err").write_text(traceback.format_exc())
        raise
    finally:
        Path(f"{report}.{rank}.json").write_text(json.dumps(results))
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()
    # Skip interpreter finalization: there, gloo's threads occasionally abort a spawned
    # worker ("terminate called without an active exception", ~1 run in 10 here, after
    # all work is done and written); see pytorch/pytorch#190489, #179291. `steer train` exits
    # normally (steer.lm.distributed.shutdown_distributed) and the torchrun test covers it.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _spawn(tmp: Path, name: str, jobs: list, kill_rank1_after_rank0: bool = False) -> list[dict]:
    ctx = mp.get_context("spawn")
    store, report = tmp / f"{name}.store", tmp / f"{name}.report"
    procs = [
        ctx.Process(target=_worker, args=(r, str(store), jobs, str(report))) for r in range(WORLD)
    ]
    for p in procs:
        p.start()
    deadline = time.monotonic() + TIMEOUT_S
    if kill_rank1_after_rank0:
        procs[0].join(TIMEOUT_S)
        if procs[1].is_alive():
            os.kill(procs[1].pid, signal.SIGKILL)
    for p in procs:
        p.join(max(1.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            pytest.fail(f"{name}: a worker did not finish in {TIMEOUT_S} s")
    if not kill_rank1_after_rank0:
        for r, p in enumerate(procs):
            err = Path(f"{report}.{r}.err")
            assert p.exitcode == 0, (
                err.read_text() if err.exists() else f"rank {r} exit {p.exitcode}"
            )
        return [json.loads(Path(f"{report}.{r}.json").read_text()) for r in range(WORLD)]
    return [{} for _ in procs]


def params(out: Path) -> dict[str, torch.Tensor]:
    meta, tensors = load_state(out / "train_state")
    return {k: v for k, v in tensors.items() if k.startswith(("sae/", "since_fired/"))}


# ---------------------------------------------------------------------- the runs
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every multi-process run, in two spawns (process start-up is most of the cost)."""
    tmp = tmp_path_factory.mktemp("ddp")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = make_trainer(Trainer, tmp / "one")
        one_summary = one.fit(RankSource())

        # A run SIGKILLed (both ranks, no chance to save) after the checkpoint of step 8.
        _spawn(
            tmp,
            "kill",
            [{"kind": "train", "name": "kill", "out": tmp / "kill", "kill_at": 10}],
            kill_rank1_after_rank0=True,
        )
        jobs = [
            {"kind": "train", "name": "full", "out": tmp / "full"},
            # rank 1 alone asks to stop while fetching its batch 9 (the one for step 10)
            {"kind": "train", "name": "stop", "out": tmp / "stop", "stop_rank": 1, "stop_at": 9},
            {"kind": "copy", "src": tmp / "stop", "out": tmp / "stop-copy"},
            {"kind": "resume", "name": "resume-stop", "out": tmp / "stop", "resume": True},
            {"kind": "copy", "src": tmp / "kill", "out": tmp / "kill-copy"},
            {"kind": "resume", "name": "resume-kill", "out": tmp / "kill", "resume": True},
            # rank 1's data ends after 7 batches: both ranks must fail, not hang
            {
                "kind": "train",
                "name": "short",
                "out": tmp / "short",
                "short_rank": 1,
                "short_len": 7,
            },
            # rank 1's batch 6 (step 7) is NaN: both ranks skip that step and stop together
            {"kind": "train", "name": "nan", "out": tmp / "nan", "nan_rank": 1, "nan_at": 6},
        ]
        reports = _spawn(tmp, "main", jobs)
    finally:
        torch.set_num_threads(n)
    return {"tmp": tmp, "one": one, "one_summary": one_summary, "reports": reports}


def test_two_ranks_train_the_same_saes_as_one_process(runs):
    tmp, one = runs["tmp"], runs["one"]
    rank0, rank1 = runs["reports"]
    summary = rank0["full"]["summary"]
    assert summary["stopped"] == "done" and summary["steps"] == 24
    assert summary["tokens"] == runs["one_summary"]["tokens"] == 24 * GLOBAL_BATCH

    ddp = params(tmp / "full")
    for name, sae in one.saes.items():
        for pname, p in sae.state_dict().items():
            torch.testing.assert_close(
                ddp[f"sae/{name}/{pname}"], p, atol=1e-5, rtol=0, msg=f"{name}.{pname}"
            )
        # dead-latent clocks: fire counts summed over ranks -> identical to one process
        assert torch.equal(ddp[f"since_fired/{name}"], one.since_fired[name])
        assert rank0["full"]["since_fired"][name] == rank1["full"]["since_fired"][name]
        assert 0 < int((one.since_fired[name] > one.dead_after_tokens).sum()) < sae.n_latents // 2

    # Logged metrics are the global batch's, on the same steps, written once (rank 0).
    ref = [json.loads(x) for x in (tmp / "one" / "metrics.jsonl").read_text().splitlines()]
    got = [json.loads(x) for x in (tmp / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in got] == [r["step"] for r in ref] == list(range(2, 25, 2))
    for a, b in zip(got, ref, strict=True):
        assert a["tokens"] == b["tokens"]
        for name in one.saes:
            for key in ("fvu", "auxk_loss", "l0", "dead_frac"):
                assert a["saes"][name][key] == pytest.approx(
                    b["saes"][name][key], rel=1e-4, abs=1e-6
                ), key
    # The state records the global batch and both ranks' data positions.
    meta, _ = load_state(tmp / "full" / "train_state")
    assert meta["train_config"]["batch_tokens"] == GLOBAL_BATCH
    assert meta["source"]["world_size"] == 2 and len(meta["source"]["ranks"]) == 2
    assert saved_world_size(tmp / "full") == 2
    assert sorted(p.name for p in (tmp / "full").iterdir()) == [
        "32-k4",
        "64-k4",
        "metrics.jsonl",
        "train_state",
    ]


def test_stop_on_one_rank_and_sigkill_both_resume_exactly(runs):
    tmp = runs["tmp"]
    rank0, rank1 = runs["reports"]
    # The stop asked by rank 1 during step 10 is honoured by both ranks after that step.
    for report in (rank0, rank1):
        assert report["stop"]["summary"]["stopped"] == "interrupted"
        assert report["stop"]["summary"]["steps"] == 10
    assert load_state(tmp / "stop-copy" / "train_state")[0]["step"] == 10
    # The SIGKILLed run left its last checkpoint (step 8); the resume drops later metrics.
    assert load_state(tmp / "kill-copy" / "train_state")[0]["step"] == 8
    expected = params(tmp / "full")
    for name in ("resume-stop", "resume-kill"):
        summary = rank0[name]["summary"]
        assert summary["stopped"] == "done" and summary["steps"] == 24, name
        out = tmp / ("stop" if name == "resume-stop" else "kill")
        got = params(out)
        for key, tensor in expected.items():
            assert torch.equal(got[key], tensor), (name, key)
        steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
        assert steps == list(range(2, 25, 2)), name


def test_ranks_out_of_step_fail_instead_of_hanging(runs):
    for report in runs["reports"]:
        assert "out of step" in report["short"]["error"]
        assert "ended early" in report["short"]["error"]


def test_nan_on_one_rank_stops_every_rank_with_the_last_good_checkpoint(runs):
    for report in runs["reports"]:
        assert report["nan"]["summary"]["stopped"] == "nan"
        assert report["nan"]["summary"]["steps"] == 6
    meta, tensors = load_state(runs["tmp"] / "nan" / "train_state")
    assert meta["step"] == 4
    assert all(torch.isfinite(t).all() for k, t in tensors.items() if k.startswith("sae/"))


def test_two_rank_state_resumes_in_one_process_or_says_it_cannot(runs, tmp_path):
    src = runs["tmp"] / "stop-copy"
    # One process, a source that cannot be re-sharded: a one-line error.
    shutil.copytree(src, tmp_path / "a")
    with pytest.raises(
        ValueError, match=r"cannot resume .* with 1 process\(es\): it was written by 2"
    ) as err:
        make_trainer(DistributedTrainer, tmp_path / "a", fresh=False).fit(RankSource(), resume=True)
    assert "\n" not in str(err.value)
    # One process, a re-shardable source: continues after the furthest batch any rank took.
    shutil.copytree(src, tmp_path / "b")
    trainer = make_trainer(DistributedTrainer, tmp_path / "b", fresh=False)
    source = ReshardableSource()
    summary = trainer.fit(source, resume=True)
    assert summary["stopped"] == "done" and summary["steps"] == 24
    assert trainer.resharded_from == 2
    assert source.i == 10 + 14  # the old ranks had fetched batches 0-9; 14 more steps
    # It wrote a state of world size 1, resumable by a plain one-process Trainer too.
    assert saved_world_size(tmp_path / "b") == 1


def test_global_batch_split():
    assert [rank_batch_tokens(255, r, 2) for r in range(2)] == [128, 127]
    assert sum(rank_batch_tokens(4097, r, 3) for r in range(3)) == 4097
    # Without a process group the trainer is a one-process trainer with the global batch.
    trainer = DistributedTrainer(CFG, D_IN, "unused")
    assert (trainer.world_size, trainer.rank, trainer.local_batch_tokens) == (1, 0, GLOBAL_BATCH)


# ---------------------------------------------------------------------- steer train under torchrun
def test_steer_train_under_torchrun_then_resume_in_one_process(
    tiny_model_dir, tiny_corpus, tmp_path
):
    from typer.testing import CliRunner

    from sae import TopKSAE
    from steer.cli.main import app

    out = tmp_path / "run"
    args = [
        "train",
        "--model",
        tiny_model_dir,
        "--layer",
        "1",
        "--corpus",
        tiny_corpus,
        "--ctx-len",
        "16",
        "--widths",
        "64",
        "--k",
        "4",
        "--batch-tokens",
        "120",
        "--tokens",
        "4800",
        "--out",
        out,
        "--save-every",
        "2",
        "--device",
        "cpu",
        "--dtype",
        "fp32",
    ]
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "steer.cli.main",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [*torchrun, *map(str, args)],
        env=env,
        cwd=Path(__file__).parents[2],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Ctrl-C as a terminal would send it to torchrun, once a checkpoint exists.
    deadline = time.monotonic() + TIMEOUT_S
    while (
        not (out / "train_state").exists() and proc.poll() is None and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    try:
        stdout, stderr = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("torchrun did not stop after SIGINT")
    assert "data parallel: 2 processes (gloo)" in stderr, stderr
    assert stderr.count("training 1 SAE(s)") == 1  # rank 0 alone talks
    assert "interrupted at" in stderr and "--resume" in stderr, stderr
    meta, _ = load_state(out / "train_state")
    stopped_at = meta["tokens"]
    assert meta["source"]["world_size"] == 2 and 0 < stopped_at < 4800
    ranks = meta["source"]["ranks"]
    assert [r["source"]["rank"] for r in ranks] == [0, 1]
    assert all(r["source"]["tokens_yielded"] > 0 for r in ranks)
    cfg = json.loads((out / "64-k4" / "cfg.json").read_text())
    assert cfg["extra"]["world_size"] == 2 and cfg["extra"]["train_config"]["batch_tokens"] == 120

    # Resume the two-process run as ONE process: the data is re-sharded, the run completes.
    result = CliRunner().invoke(app, [*map(str, args), "--resume"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "resumed a 2-process run with 1" in result.stderr
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["tokens"] == 4800
    assert records[-1]["saes"]["64-k4"]["fvu"] < records[0]["saes"]["64-k4"]["fvu"]
    TopKSAE.load(out / "64-k4")
    assert saved_world_size(out) == 1
