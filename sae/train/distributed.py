"""Data-parallel SAE training over torch.distributed (DDP semantics, no DDP wrapper).

Every rank holds the whole SAE family and a disjoint share of each global batch (rank r
trains on its own activations). One step:

    header   all_gather [phase, n_r, stop_r, Σx_r]           -> N, global mean μ, stop flag
    variance all_reduce Σ||x_r - μ||²                          -> V (the global batch's)
    forward/backward on the local share (Trainer._backward_and_step)
    grads    g ← Σ_r (v_r / V) · g_r      (all_reduce SUM)     -> the one-process gradient
    fired    all_reduce SUM of per-latent fire counts          -> same dead-latent clocks

Why the v_r / V weights and not a plain mean: the loss is normalised by the batch's
variance (FVU = ||x - x̂||² / Σ||x - mean(x)||²), so rank r's loss is SSE_r / v_r and the
mean of the ranks' gradients is not the gradient of (Σ SSE_r) / V. Every loss term (FVU,
AuxK, Multi-TopK) shares that denominator, so rescaling each rank's gradient by v_r / V
before summing gives exactly the gradient one process computes on the concatenated batch
(up to floating-point summation order). The logged FVU / AuxK / L0 are the global batch's.

Also kept identical to one process: the initialisation (input scale from the global mean
of ||x||², b_pre = geometric median of all ranks' samples by a distributed Weiszfeld
iteration, then broadcast from rank 0), the lr schedule, clipping (after the reduction),
the NaN guard (a non-finite loss on any rank poisons the summed gradient, so every rank
skips the step together) and request_stop() (synchronised: all ranks stop at one step).

Every synchronisation point starts by all-gathering a phase code, so ranks that fall out
of step (e.g. one rank's data ends early) raise a clear error instead of deadlocking or
mixing up tensors. Rank 0 alone writes metrics.jsonl, checkpoints and the training state;
the state holds each rank's data position and not-yet-trained tokens (gathered to rank 0),
so `fit(resume=True)` with the same number of ranks continues exactly. With a different
number, a source that implements `load_sharded_state_dict(states)` decides where to pick
up (steer's activation stream skips everything any old rank touched); any other source
gets a one-line ValueError.

`cfg.batch_tokens` is the GLOBAL batch: rank r trains on B // W (+1 for the first B % W
ranks) tokens per step, so a run with W ranks and batch B follows the same schedule, and
for the same data the same weights, as one process with batch B.

Imports torch only (the sae/ rule). The process group must be initialised by the caller
(steer/distributed.py does it from torchrun's environment); without one, world size is 1.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor

from sae.geomedian import distributed_geometric_median

from .shards import SHARDED_FORMAT, is_sharded_state, rank_batch_tokens
from .trainer import STATE_DIR, TrainConfig, Trainer

# Phase codes all-gathered at every synchronisation point.
_PHASES = {1: "a training step", 2: "logging", 3: "a checkpoint", 4: "initialisation"}
_STEP, _LOG, _SAVE, _INIT = 1, 2, 3, 4


class _Null:
    """A log file that swallows what non-zero ranks would write."""

    def write(self, _text: str) -> None:
        pass

    def flush(self) -> None:
        pass


class _FixedState:
    """Hands a ready-made state to Trainer._save / receives one from Trainer._load_state."""

    def __init__(self, state=None):
        self.state = state
        self.loaded = False

    def state_dict(self):
        return self.state

    def load_state_dict(self, state) -> None:
        self.state, self.loaded = state, True


class DistributedTrainer(Trainer):
    """Trainer whose ranks each train on a share of every global batch (see module doc).

    Create it on every rank with the same arguments (`cfg.batch_tokens` is the global
    batch) and call fit() on every rank with that rank's own source. Construction is a
    collective: rank 0's initial weights are broadcast so every rank starts identical.
    """

    def __init__(self, cfg: TrainConfig, d_in: int, out_dir: str | Path, *, group=None, **kwargs):
        super().__init__(cfg, d_in, out_dir, **kwargs)
        self.group = group
        active = dist.is_available() and dist.is_initialized()
        self.world_size = dist.get_world_size(group) if active else 1
        self.rank = dist.get_rank(group) if active else 0
        if self.hookpoints is not None and self.world_size > 1:
            # The loss weights v_r / V (module doc) would be needed per depth.
            raise ValueError("several depths train in one process: launch without torchrun")
        if cfg.batch_tokens < self.world_size:
            raise ValueError(
                f"batch_tokens={cfg.batch_tokens} is smaller than the number of processes "
                f"({self.world_size}): every rank needs at least one token per step"
            )
        self._src = dist.get_global_rank(group, 0) if active and group is not None else 0
        self.local_batch_tokens = rank_batch_tokens(cfg.batch_tokens, self.rank, self.world_size)
        # Batches of the initialisation sample, as one process would take them.
        init_tokens = min(cfg.geomedian_tokens, self.total_steps * cfg.batch_tokens)
        self.local_geomedian_tokens = (
            math.ceil(init_tokens / cfg.batch_tokens) * self.local_batch_tokens
        )
        self._stop_local = False
        self._n_global = 0
        self._weights: Tensor | None = None  # [v_r / V, v_r / V, n_r / N] of this step
        self._snapshot: dict[str, Tensor] = {}
        self._global_cfg = cfg
        self.resharded_from: int | None = None  # set when resuming a run of another size
        if self.distributed:
            with torch.no_grad():
                for sae in self.saes.values():
                    for t in sae.state_dict().values():
                        dist.broadcast(t, self._src, group=group)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ------------------------------------------------------------------ public API
    def request_stop(self) -> None:
        """Ask every rank to save and return. Only sets a flag (signal-handler safe); the
        flag travels with the next step's header, so all ranks stop after the same step."""
        self._stop_local = True
        if not self.distributed:
            super().request_stop()

    def fit(
        self,
        source: Iterable[Tensor],
        *,
        resume: bool = False,
        on_log: Callable[[dict], None] | None = None,
    ) -> dict:
        """As Trainer.fit, on this rank's source; on_log is called on rank 0 only."""
        global_cfg = self.cfg
        # Inside fit the base class sees this rank's share of the batch; total_steps and
        # dead_after_tokens were fixed from the global config in __init__.
        self.cfg = replace(
            global_cfg,
            batch_tokens=self.local_batch_tokens,
            geomedian_tokens=self.local_geomedian_tokens,
        )
        self._global_cfg = global_cfg
        try:
            return super().fit(source, resume=resume, on_log=on_log if self.is_main else None)
        finally:
            self.cfg = global_cfg
            self._stop_local = False

    # ------------------------------------------------------------------ collectives
    def _sync_phase(self, phase: int, values: Tensor | None = None) -> Tensor | None:
        """Check that every rank is at the same point (phase, step), then all-gather
        `values` (float64). Returns the gathered (W, len(values)) table, or None.

        The check is a fixed-size collective of its own: ranks at different points would
        otherwise exchange tensors of different sizes (a hang, or worse, garbage)."""
        here = torch.tensor(
            [float(phase), float(self.step)], dtype=torch.float64, device=self.device
        )
        there = [torch.empty_like(here) for _ in range(self.world_size)]
        dist.all_gather(there, here, group=self.group)
        points = [(int(p), int(s)) for p, s in torch.stack(there).tolist()]
        if any(point != points[self.rank] for point in points):
            where = ", ".join(
                f"rank {r}: {_PHASES.get(p, p)} at step {s}" for r, (p, s) in enumerate(points)
            )
            raise RuntimeError(
                f"data-parallel ranks are out of step ({where}): usually one rank's data "
                "source ended early; give every rank at least total_tokens / world_size tokens"
            )
        if values is None:
            return None
        row = values.to(torch.float64).reshape(-1)
        rows = [torch.empty_like(row) for _ in range(self.world_size)]
        dist.all_gather(rows, row, group=self.group)
        return torch.stack(rows)

    def _all_reduce(self, t: Tensor) -> Tensor:
        dist.all_reduce(t, op=dist.ReduceOp.SUM, group=self.group)
        return t

    # ------------------------------------------------------------------ one step
    def _backward_and_step(self, x: Tensor) -> bool:
        if not self.distributed:
            return super()._backward_and_step(x)
        x = x.to(self.device, non_blocking=True)
        xf = x.float()
        n_r = x.shape[0]
        header = torch.cat(
            [
                torch.tensor(
                    [float(n_r), float(self._stop_local)], dtype=torch.float64, device=self.device
                ),
                xf.sum(0, dtype=torch.float64),
            ]
        )
        table = self._sync_phase(_STEP, header)
        n_total = int(table[:, 0].sum().item())
        if bool(table[:, 1].any()):
            self._stop = True  # the base loop stops after this step, on every rank alike
        mean = (table[:, 2:].sum(0) / n_total).to(xf.dtype)  # (d,) global batch mean
        # Variances around the rank's own mean (the denominator of its loss) and around
        # the global mean (this rank's part of the global denominator V).
        local_var = (xf - xf.mean(0)).pow(2).sum()
        global_part = self._all_reduce((xf - mean).pow(2).sum(dtype=torch.float64).reshape(1))
        w_loss = (local_var.double() / global_part[0]).float()
        self._weights = torch.stack([w_loss, w_loss, w_loss.new_tensor(n_r / n_total)])
        self._n_global = n_total
        self._snapshot = {name: w.clone() for name, w in self._window.items()}
        ok = super()._backward_and_step(x)
        # The base class added this rank's [fvu, auxk, l0] to the log window: turn them
        # into this rank's share of the global batch's values (summed over ranks at _log).
        for name, w in self._window.items():
            self._window[name] = self._snapshot[name] + (w - self._snapshot[name]) * self._weights
        return ok

    def _reduce_tokens(self, n_tokens: int) -> int:
        return self._n_global if self.distributed else n_tokens

    def _reduce_gradients(self) -> None:
        if not self.distributed:
            return
        # A non-finite loss here (seen in this step's window increment) turns this rank's
        # scale into NaN, so the summed gradient is NaN on every rank and all of them
        # skip the step together. Tensor ops only: no host sync.
        finite = torch.stack(
            [torch.isfinite(self._window[n] - self._snapshot[n]).all() for n in self.saes]
        ).all()
        scale = torch.where(finite, self._weights[0], torch.full_like(self._weights[0], math.nan))
        works = []
        for sae in self.saes.values():
            for p in sae.parameters():
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                p.grad.mul_(scale)
                works.append(
                    dist.all_reduce(p.grad, op=dist.ReduceOp.SUM, group=self.group, async_op=True)
                )
        for work in works:
            work.wait()

    def _reduce_fired(self, fired: Tensor) -> Tensor:
        return self._all_reduce(fired) if self.distributed else fired

    def _broadcast_init(self, stats: Tensor) -> Tensor:
        if self.distributed:
            stats = stats.contiguous()
            dist.broadcast(stats, self._src, group=self.group)
        return stats

    # ------------------------------------------------------------------ initialisation
    @torch.no_grad()
    def _initialize(self, sample: Tensor) -> bool:
        """Input scale and b_pre from all ranks' samples together (one process's result)."""
        if not self.distributed:
            return super()._initialize(sample)
        xs = sample.to(self.device, torch.float32)
        bad = (~torch.isfinite(xs)).sum().double()
        local = torch.stack(
            [
                xs.pow(2).sum(dtype=torch.float64),
                torch.tensor(float(len(xs)), dtype=torch.float64, device=self.device),
                bad,
            ]
        )
        total = self._sync_phase(_INIT, local).sum(0)
        mean_sq = float(total[0] / total[1])
        if float(total[2]) > 0 or not mean_sq > 0 or not math.isfinite(mean_sq):
            return False
        scale = math.sqrt(self.d_in / mean_sq)
        median = distributed_geometric_median(xs * scale, group=self.group)
        stats = self._broadcast_init(torch.cat([median.new_tensor([scale]), median]))
        scale, median = float(stats[0]), stats[1:]
        for sae in self.saes.values():
            sae.cfg.input_scale = scale
            sae.b_pre.copy_(median.to(sae.dtype))
        self.initialized = True
        return True

    # ------------------------------------------------------------------ logging
    def _log(self, log_file, on_log) -> None:
        if not self.distributed:
            return super()._log(log_file, on_log)
        names = list(self.saes)
        window = torch.stack([self._window[n] for n in names])  # (S, 3)
        table = self._sync_phase(_LOG, window.reshape(-1))
        total = table.sum(0).reshape(window.shape).to(window.dtype)
        for i, name in enumerate(names):
            self._window[name] = total[i]
        if self.is_main:
            super()._log(log_file, on_log)
        else:
            super()._log(_Null(), None)  # same metrics in memory, nothing written

    def _trim_metrics(self) -> None:
        if self.is_main:
            super()._trim_metrics()

    # ------------------------------------------------------------------ checkpoints
    def _save(self, pending: list[Tensor], source) -> None:
        if self.distributed:
            self._sync_phase(_SAVE)
        mine = {
            "source": source.state_dict() if hasattr(source, "state_dict") else None,
            "pending": torch.cat([p.detach().cpu() for p in pending]) if pending else None,
        }
        parts = [mine]
        if self.distributed:
            parts = [None] * self.world_size if self.is_main else None
            dist.gather_object(mine, parts, dst=self._src, group=self.group)
        if self.is_main:
            state = {"format": SHARDED_FORMAT, "world_size": self.world_size, "ranks": parts}
            with self._view(self._global_cfg):  # the state records the global batch
                super()._save([], _FixedState(state))
        if self.distributed:
            dist.barrier(group=self.group)  # when fit() returns anywhere, the files exist

    @contextlib.contextmanager
    def _view(self, cfg: TrainConfig):
        saved, self.cfg = self.cfg, cfg
        try:
            yield
        finally:
            self.cfg = saved

    def _load_state(self, source) -> Tensor | None:
        catcher = _FixedState()
        pending = super()._load_state(catcher)
        state = catcher.state
        if not catcher.loaded or state is None:
            return pending
        if is_sharded_state(state):
            old_world = int(state["world_size"])
            parts = state["ranks"]
        else:  # written by a one-process Trainer
            old_world, parts = 1, [{"source": state, "pending": pending}]
        if old_world == self.world_size:
            part = parts[self.rank]
            if part["source"] is not None:
                if hasattr(source, "load_state_dict"):
                    source.load_state_dict(part["source"])
                else:
                    warnings.warn(
                        "the training state holds a data position but this source has no "
                        "load_state_dict(): resuming from the start of the source",
                        stacklevel=3,
                    )
            return part["pending"]
        if hasattr(source, "load_sharded_state_dict"):
            source.load_sharded_state_dict([p["source"] for p in parts])
            self.resharded_from = old_world
            return None  # tokens taken but not trained by the old ranks are skipped
        raise ValueError(
            f"cannot resume {self.out_dir / STATE_DIR} with {self.world_size} process(es): it was "
            f"written by {old_world} and this data source cannot be re-sharded; launch "
            f"{old_world} process(es)"
        )
