"""Train a family of TopK SAEs on one stream of activations (Gao et al., arXiv 2406.04093).

Every (width, k) pair of the config is one SAE; all of them train on the same batch at
every step, so one pass over the language model yields the whole family.

Recipe (paper §2 and App. A/B):
- the first `geomedian_tokens` of the stream (also trained on) fix the input scale s with
  E||s·x||² = d_in, and b_pre = geometric median of s·x; W_enc starts as W_decᵀ;
- loss = FVU + α·AuxK (+ FVU(4k)/8 with Multi-TopK); AuxK asks the dead latents (not fired
  for `dead_after_tokens`) to reconstruct the residual error;
- one Adam per SAE (β = 0.9, 0.999, ε = 6.25e-10 as in the paper), lr 2e-4/sqrt(n/2^14),
  linear warmup, linear decay to 0 over the last `decay_fraction` of steps, gradient
  clipping; the decoder-norm-changing part of W_dec's gradient is removed before the step
  and the rows renormalised after it;
- or (`optimizer="signum"`) schedule-free SignSGD as in EleutherAI sparsify (sae/optim.py),
  lr 2.5e-3/sqrt(n/2^14), warmup but no decay: faster on short runs;
- a non-finite loss or gradient stops training before the step is taken; the checkpoint
  on disk (last periodic save) is left untouched.

On disk, in out_dir: `<n>-k<k>/` (cfg.json + sae.safetensors, see TopKSAE.save),
`metrics.jsonl` (one JSON record per log step) and `train_state/` (sae/state.py).

Several depths at once (`hookpoints=[...]`): the source yields (N, D, d) batches, the
residuals of D hook points for the same N tokens (one forward pass of the model), and the
whole family trains at each depth on its slice. Each depth gets `<hookpoint>/` in out_dir
with its `<n>-k<k>/` checkpoints and its own metrics.jsonl; one train_state/ holds them
all. Every depth's family starts from the seed's weights and sees its depth's tokens in
the stream's order, so it trains exactly as a one-depth run on that hook point would.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict
from pathlib import Path

import torch
from torch import Tensor

from sae.config import SAEConfig
from sae.geomedian import geometric_median
from sae.matryoshka import nested_forward
from sae.model import TopKSAE, atomic_write
from sae.optim import ScheduleFreeSignSGD, default_signum_lr
from sae.state import load_state, pack, save_state, state_exists, unpack
from sae.train.baselines import after_step, baseline_step, make_sae
from sae.train.config import TrainConfig

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 6.25e-10  # paper App. A; the PyTorch default 1e-8 is large next to TopK-sparse grads
STATE_DIR = "train_state"
METRICS_FILE = "metrics.jsonl"


def sae_name(n_latents: int, k: int) -> str:
    return f"{n_latents}-k{k}"


def default_lr(n_latents: int) -> float:
    """Paper's learning-rate scaling with width: 2e-4 / sqrt(n / 2^14)."""
    return 2e-4 / math.sqrt(n_latents / 2**14)


class _Batcher:
    """Re-chunks a stream of (N_i, *shape) batches into (size, *shape) batches (the last may
    be short); shape is (d,), or (D, d) for D depths at once.

    Tokens taken from the source but not yet trained on stay in `pending`, which is saved
    in the training state so that a resumed run sees exactly the same batches."""

    def __init__(
        self, it: Iterator, size: int, shape: tuple, device: torch.device, pending: Tensor | None
    ):
        self.it, self.size, self.shape, self.device = it, size, tuple(shape), device
        self.pending: list[Tensor] = (
            [pending.to(device)] if pending is not None and len(pending) else []
        )
        self.n_pending = sum(len(p) for p in self.pending)
        self.exhausted = False

    def next(self) -> Tensor | None:
        while self.n_pending < self.size and not self.exhausted:
            try:
                batch = next(self.it)
            except StopIteration:
                self.exhausted = True
                break
            if not isinstance(batch, Tensor) or tuple(batch.shape[1:]) != self.shape:
                shape = tuple(batch.shape) if isinstance(batch, Tensor) else type(batch).__name__
                want = ", ".join(["N", *map(str, self.shape)])
                raise ValueError(f"activation batches must be ({want}) tensors, got {shape}")
            if len(batch) == 0:
                continue
            batch = batch.to(self.device, non_blocking=True)
            if not self.pending and len(batch) == self.size:
                return batch  # the usual case: the source already yields full batches
            self.pending.append(batch)
            self.n_pending += len(batch)
        if self.n_pending == 0:
            return None
        flat = torch.cat(self.pending) if len(self.pending) > 1 else self.pending[0]
        out, rest = flat[: self.size], flat[self.size :]
        self.pending = [rest] if len(rest) else []
        self.n_pending = len(rest)
        return out


class Trainer:
    """Trains `saes` ("<n>-k<k>" -> TopKSAE), one per (width, k) of the config; with
    `hookpoints`, one family per hook point ("<hookpoint>/<n>-k<k>" -> TopKSAE)."""

    def __init__(
        self,
        cfg: TrainConfig,
        d_in: int,
        out_dir: str | Path,
        *,
        hookpoint: str = "",
        hookpoints: list[str] | None = None,
        model_name: str = "",
        provenance: dict | None = None,
    ):
        if d_in <= 0:
            raise ValueError(f"d_in must be positive, got {d_in}")
        if hookpoints is not None and (
            not hookpoints or len(set(hookpoints)) != len(hookpoints) or not all(hookpoints)
        ):
            raise ValueError(f"hookpoints must be distinct names, got {hookpoints}")
        # Several depths: one family per hook point, under "<hookpoint>/" (module doc).
        self.hookpoints = list(hookpoints) if hookpoints is not None else None
        self.cfg = cfg
        self.d_in = d_in
        self.out_dir = Path(out_dir)
        self.hookpoint, self.model_name = hookpoint, model_name
        self.provenance = dict(provenance or {})
        self.device = torch.device(cfg.device)
        self.total_steps = max(1, cfg.total_tokens // cfg.batch_tokens)
        self.k_aux = cfg.k_aux or d_in // 2
        self.dead_after_tokens = cfg.dead_after_tokens or max(
            cfg.batch_tokens, min(10_000_000, cfg.total_tokens // 10)
        )

        self.saes: dict[str, TopKSAE] = {}
        self.specs: dict = {}  # name -> SAESpec (arch, width, sparsity knob)
        self.lrs: dict[str, float] = {}
        self.depth_of: dict[str, int] = {}  # name -> index of its hook point in the batch
        for depth, (prefix, point) in enumerate(self._families(hookpoint)):
            self._build_family(depth, prefix, point, model_name)
        self.optimizers = {
            name: _make_optimizer(cfg.optimizer, sae, self.lrs[name])
            for name, sae in self.saes.items()
        }
        # Tokens since each latent last fired (n,): a tensor, so data-parallel ranks can
        # all-reduce the per-step "fired" masks that update it.
        self.since_fired = {
            name: torch.zeros(sae.n_latents, dtype=torch.long, device=self.device)
            for name, sae in self.saes.items()
        }
        self.step = 0
        self.tokens = 0
        self.initialized = False
        self.metrics: dict[str, dict] = {name: {} for name in self.saes}  # last logged
        self._stop = False
        self._fitted = False
        self._reset_log_window()

    def _families(self, hookpoint: str) -> list[tuple[str, str]]:
        """(name prefix, hook point) of each depth's family, in the batch's depth order."""
        if self.hookpoints is None:
            return [("", hookpoint)]
        return [(f"{point}/", point) for point in self.hookpoints]

    def _build_family(self, depth: int, prefix: str, hookpoint: str, model_name: str) -> None:
        cfg, d_in = self.cfg, self.d_in
        # Same seed -> same initial weights whatever the device and depth, without
        # touching the global RNG: a depth trains as its one-depth run would.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            for spec in cfg.specs():
                name, n = prefix + spec.name, spec.n_latents
                self.specs[name] = spec
                fields = dict(hookpoint=hookpoint, model_name=model_name)
                if spec.arch == "topk":
                    sae_cfg = SAEConfig(
                        d_in=d_in,
                        n_latents=n,
                        k=spec.k,
                        multi_topk=cfg.multi_topk,
                        matryoshka=cfg.matryoshka,
                        **fields,
                    )
                    sae = TopKSAE(sae_cfg, device="cpu")
                else:
                    sae = make_sae(spec, d_in, **fields)
                self.saes[name] = sae.to(self.device)
                self.depth_of[name] = depth
                self.lrs[name] = cfg.lr or (
                    default_signum_lr(n) if cfg.optimizer == "signum" else default_lr(n)
                )

    # ------------------------------------------------------------------ public API
    def request_stop(self) -> None:
        """Ask fit() to save everything and return at the next step boundary.

        Only sets a flag, so it is safe from another thread or a signal handler."""
        self._stop = True

    def fit(
        self,
        source: Iterable[Tensor],
        *,
        resume: bool = False,
        on_log: Callable[[dict], None] | None = None,
    ) -> dict:
        """Train on `source` (an iterable of (N, d_in) tensors) until total_tokens, the end
        of the source, request_stop() or a non-finite loss. Returns a summary dict.

        The source must yield fresh tensors (batches may be held a few steps before use).

        resume=True continues from out_dir/train_state (weights, optimiser, counters, data
        position via source.load_state_dict, tokens taken but not yet trained on)."""
        if self._fitted and not resume:
            raise ValueError(
                "this Trainer has already trained: create a new one, or fit(resume=True)"
            )
        self._fitted = True
        self.out_dir.mkdir(parents=True, exist_ok=True)
        pending = None
        if resume:
            if not state_exists(self.out_dir / STATE_DIR):
                raise ValueError(f"nothing to resume: {self.out_dir / STATE_DIR} does not exist")
            pending = self._load_state(source)
            self._trim_metrics()
        else:
            for path in self._metrics_paths().values():
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(path, lambda tmp: Path(tmp).write_text(""))

        shape = (self.d_in,) if self.hookpoints is None else (len(self.hookpoints), self.d_in)
        batcher = _Batcher(iter(source), self.cfg.batch_tokens, shape, self.device, pending)
        queue: deque[Tensor] = deque()  # batches taken for initialisation, trained on first
        stopped = "done"
        if not self.initialized:
            target = min(self.cfg.geomedian_tokens, self.total_steps * self.cfg.batch_tokens)
            got = 0
            while got < target and (batch := batcher.next()) is not None:
                queue.append(batch)
                got += len(batch)
            if not queue:
                raise ValueError("the activation source yielded no data")
            if not self._initialize(torch.cat(list(queue))):
                stopped = "nan"

        self._reset_log_window()
        logged_step = self.step
        with contextlib.ExitStack() as files:
            logs = {p: files.enter_context(open(f, "a")) for p, f in self._metrics_paths().items()}
            log_file = logs[""] if self.hookpoints is None else logs
            while stopped == "done" and self.step < self.total_steps:
                if self._stop:
                    stopped = "interrupted"
                    break
                batch = queue.popleft() if queue else batcher.next()
                if batch is None:
                    break  # source exhausted before total_tokens
                if not self._backward_and_step(batch):
                    stopped = "nan"
                    break
                if self.step % self.cfg.log_every_steps == 0 or self.step == self.total_steps:
                    self._log(log_file, on_log)
                    logged_step = self.step
                if self.step % self.cfg.save_every_steps == 0 and self.step < self.total_steps:
                    self._save(list(queue) + batcher.pending, source)
            if stopped != "nan":
                if self.step != logged_step:
                    self._log(log_file, on_log)
                self._save(list(queue) + batcher.pending, source)
        self._use_average_weights()  # what the caller reads from self.saes: what was saved
        self._stop = False  # a stop requested before fit() started still counts; this one is done
        return self._summary(stopped)

    # ------------------------------------------------------------------ one step
    def _backward_and_step(self, x: Tensor) -> bool:
        """Forward + backward of every SAE on batch x (N, d), then one optimiser step each.

        Returns False, without stepping, if a loss or gradient is not finite. The host
        syncs once per step (that check), plus once per SAE for the dead-latent count
        when some latent can be dead. Data-parallel training overrides the _reduce_* hooks.
        """
        cfg = self.cfg
        x = x.to(self.device, non_blocking=True)
        can_be_dead = cfg.auxk_alpha > 0 and self.tokens > self.dead_after_tokens
        checks: list[Tensor] = []
        fired: dict[str, Tensor] = {}
        inputs = self._depth_inputs(x)
        for name, sae in self.saes.items():
            x = inputs[self.depth_of[name]]  # (N, d)
            dead_mask = self.since_fired[name] > self.dead_after_tokens if can_be_dead else None
            if self.specs[name].arch != "topk":
                progress = self.step / self.total_steps
                out, loss = baseline_step(sae, self.specs[name], x, progress)
            elif sae.cfg.matryoshka:
                out, level_fvus = nested_forward(sae, x, dead_mask=dead_mask, k_aux=self.k_aux)
                loss = level_fvus.mean() + cfg.auxk_alpha * out.auxk_loss
            else:
                out = sae(x, dead_mask=dead_mask, k_aux=self.k_aux)
                loss = out.fvu + cfg.auxk_alpha * out.auxk_loss
            if sae.cfg.multi_topk:
                loss = loss + out.multi_topk_fvu / 8
            loss.backward()
            positive = out.top_acts > 0  # (N, k)
            fired[name] = torch.zeros(
                sae.n_latents, dtype=torch.int32, device=self.device
            ).index_add_(0, out.top_indices.reshape(-1), positive.reshape(-1).int())
            l0 = positive.sum() / positive.shape[0]
            self._window[name] += torch.stack(
                [out.fvu.detach(), out.auxk_loss.detach(), l0.to(out.fvu.dtype)]
            )
            checks.append(loss.detach())

        n_tokens = self._reduce_tokens(inputs[0].shape[0])
        self._reduce_gradients()
        clip = cfg.grad_clip if cfg.grad_clip > 0 else math.inf
        for name, sae in self.saes.items():
            if self.specs[name].unit_decoder:
                sae.remove_gradient_parallel_to_decoder()
            checks.append(torch.nn.utils.clip_grad_norm_(sae.parameters(), clip))
        if not bool(torch.isfinite(torch.stack(checks)).all()):  # the one sync of a step
            for opt in self.optimizers.values():
                opt.zero_grad(set_to_none=True)
            return False

        lr_factor = self.lr_factor(self.step)
        for name, sae in self.saes.items():
            opt = self.optimizers[name]
            for group in opt.param_groups:
                group["lr"] = self.lrs[name] * lr_factor
            opt.step()
            opt.zero_grad(set_to_none=True)
            if self.specs[name].unit_decoder:
                sae.set_decoder_norm_to_unit()
            after_step(sae, self.specs[name])
            counter = self.since_fired[name]
            counter += n_tokens
            counter.masked_fill_(self._reduce_fired(fired[name]) > 0, 0)
        self.step += 1
        self.tokens += n_tokens
        self._window_steps += 1
        return True

    def _depth_inputs(self, x: Tensor) -> list[Tensor]:
        """Batch (N, d) or (N, D, d) -> each depth's (N, d), contiguous for the matmuls."""
        if self.hookpoints is None:
            return [x]
        return [x[:, i].contiguous() for i in range(x.shape[1])]

    def _metrics_paths(self) -> dict[str, Path]:
        """Name prefix ("" with one depth, "<hookpoint>/") -> that family's metrics file."""
        return {
            prefix: self.out_dir / prefix / METRICS_FILE
            for prefix, _ in self._families(self.hookpoint)
        }

    def lr_factor(self, step: int) -> float:
        """Multiplier of the base lr at 0-based `step`: linear warmup, then linear decay to 0."""
        factor = min(1.0, (step + 1) / self.cfg.warmup_steps) if self.cfg.warmup_steps else 1.0
        if self.cfg.optimizer == "signum":
            return factor  # schedule-free: no decay
        decay_steps = int(self.cfg.decay_fraction * self.total_steps)
        decay_start = self.total_steps - decay_steps
        if decay_steps and step >= decay_start:
            factor *= max(0.0, (self.total_steps - step) / decay_steps)
        return factor

    # Data-parallel hooks: identity for one process. A DDP subclass all-reduces here
    # (sum of tokens, mean of gradients, sum of fire counts) so every rank stays identical.
    def _reduce_tokens(self, n_tokens: int) -> int:
        return n_tokens

    def _reduce_gradients(self) -> None:
        pass

    def _reduce_fired(self, fired: Tensor) -> Tensor:
        return fired

    def _broadcast_init(self, stats: Tensor) -> Tensor:
        """[input_scale, *b_pre] (d + 1,) from this process's sample; DDP: broadcast rank 0's."""
        return stats

    # ------------------------------------------------------------------ initialisation
    @torch.no_grad()
    def _initialize(self, sample: Tensor) -> bool:
        """Input scale (E||s·x||² = d_in) and b_pre = geometric median of s·x, from sample (M, d)."""
        for depth, xs in enumerate(self._depth_inputs(sample.to(self.device, torch.float32))):
            mean_sq = xs.pow(2).sum(1).mean()
            if not torch.isfinite(xs).all() or not mean_sq > 0:
                return False
            scale = math.sqrt(self.d_in / float(mean_sq))
            median = geometric_median(xs * scale)
            stats = self._broadcast_init(torch.cat([median.new_tensor([scale]), median]))
            scale, median = float(stats[0]), stats[1:]
            for name, sae in self.saes.items():
                if self.depth_of[name] == depth:
                    sae.cfg.input_scale = scale
                    sae.b_pre.copy_(median.to(sae.dtype))
        self.initialized = True
        return True

    # ------------------------------------------------------------------ logging
    def _reset_log_window(self) -> None:
        # Running sums since the last log, kept on the device: [fvu, auxk_loss, l0].
        self._window = {name: torch.zeros(3, device=self.device) for name in self.saes}
        self._window_steps = 0
        self._window_start = (time.perf_counter(), self.tokens)

    def _log(self, log_file, on_log) -> None:
        now = time.perf_counter()
        t0, tokens0 = self._window_start
        steps = max(1, self._window_steps)
        lr_factor = self.lr_factor(max(0, self.step - 1))
        saes = {}
        for name in self.saes:
            fvu, auxk, l0 = (self._window[name] / steps).tolist()
            dead = float((self.since_fired[name] > self.dead_after_tokens).float().mean())
            saes[name] = {
                "fvu": fvu,
                "l0": l0,
                "dead_frac": dead,
                "auxk_loss": auxk,
                "lr": self.lrs[name] * lr_factor,
            }
        self.metrics = saes
        first = next(iter(saes.values()))
        record = {
            "step": self.step,
            "tokens": self.tokens,
            "tokens_per_s": (self.tokens - tokens0) / max(now - t0, 1e-9),
            "lr": first["lr"],
            "saes": saes,
        }
        # Several depths: each depth's file gets the record of its own family, named as
        # in a one-depth run; on_log sees them all ("<hookpoint>/<n>-k<k>").
        files = log_file if isinstance(log_file, dict) else {"": log_file}
        for prefix, file in files.items():
            mine = {n[len(prefix) :]: m for n, m in saes.items() if n.startswith(prefix)}
            file.write(json.dumps({**record, "saes": mine}) + "\n")
            file.flush()
        self._reset_log_window()
        if on_log is not None:
            on_log(record)

    def _trim_metrics(self) -> None:
        """On resume, drop records logged after the checkpoint we resume from."""
        for path in self._metrics_paths().values():
            if not path.exists():
                continue
            kept = []
            for line in path.read_text().splitlines():
                try:
                    if json.loads(line).get("step", math.inf) <= self.step:
                        kept.append(line + "\n")
                except (json.JSONDecodeError, AttributeError):
                    continue  # e.g. a line half-written when the run was killed
            atomic_write(path, lambda tmp, kept=kept: Path(tmp).write_text("".join(kept)))

    # ------------------------------------------------------------------ checkpoints
    def _save(self, pending: list[Tensor], source) -> None:
        tensors: dict[str, Tensor] = {}
        for name, sae in self.saes.items():
            for pname, p in sae.state_dict().items():
                tensors[f"sae/{name}/{pname}"] = p.detach().cpu().clone()
            tensors[f"since_fired/{name}"] = self.since_fired[name].cpu().clone()
        optim = {
            name: pack(opt.state_dict(), tensors, f"optim/{name}")
            for name, opt in self.optimizers.items()
        }
        rng = {"torch": pack(torch.get_rng_state(), tensors, "rng/torch")}
        if self.device.type == "cuda":
            rng["cuda"] = pack(torch.cuda.get_rng_state(self.device), tensors, "rng/cuda")
        if pending:
            tensors["pending"] = torch.cat([p.cpu() for p in pending])
        source_state = None
        if hasattr(source, "state_dict"):
            source_state = pack(source.state_dict(), tensors, "source")
        meta = {
            "step": self.step,
            "tokens": self.tokens,
            "d_in": self.d_in,
            "saes": list(self.saes),
            "multi_topk": self.cfg.multi_topk,
            "input_scale": {name: sae.cfg.input_scale for name, sae in self.saes.items()},
            "train_config": asdict(self.cfg),
            "optim": optim,
            "rng": rng,
            "source": source_state,
            "metrics": self.metrics,
        }
        save_state(self.out_dir / STATE_DIR, meta, tensors)
        with contextlib.ExitStack() as averaged:
            # Checkpoints hold schedule-free's average x; training goes on from y unchanged.
            for name, opt in self.optimizers.items():
                if hasattr(opt, "average_weights"):
                    averaged.enter_context(opt.average_weights())
                    self.saes[name].fold_decoder_norms()
            self._save_checkpoints()

    def _save_checkpoints(self) -> None:
        for name, sae in self.saes.items():
            sae.cfg.extra = {
                **self.provenance,
                "tokens": self.tokens,
                "steps": self.step,
                "lr": self.lrs[name],
                "dead_after_tokens": self.dead_after_tokens,
                "k_aux": self.k_aux,
                "train_config": asdict(self.cfg),
                "metrics": self.metrics.get(name, {}),
            }
            spec = self.specs[name]
            if spec.arch != "topk":
                sae.cfg.extra.update(train_arch=spec.arch, sparsity_coeff=spec.coeff)
            if not spec.unit_decoder:
                # Free decoder rows (relu): save with unit rows, norms moved into the
                # encoder (the same function); training goes on from the unfolded weights.
                sae = copy.deepcopy(sae)
                sae.fold_decoder_norms()
            sae.save(self.out_dir / name)

    def _use_average_weights(self) -> None:
        """Schedule-free optimizers: leave the parameters at the average x (end of training)."""
        for name, opt in self.optimizers.items():
            if hasattr(opt, "average_weights") and opt.train_mode:
                opt.eval()
                self.saes[name].fold_decoder_norms()

    def _load_state(self, source) -> Tensor | None:
        folder = self.out_dir / STATE_DIR
        meta, tensors = load_state(folder)
        saved_optimizer = meta.get("train_config", {}).get("optimizer", "adam")
        if saved_optimizer != self.cfg.optimizer:
            raise ValueError(
                f"cannot resume from {folder}: it was trained with optimizer={saved_optimizer}, "
                f"this run has optimizer={self.cfg.optimizer}"
            )
        theirs_levels = meta.get("train_config", {}).get("matryoshka", [])
        if theirs_levels != self.cfg.matryoshka:
            raise ValueError(
                f"cannot resume from {folder}: it was trained with matryoshka levels "
                f"{theirs_levels or 'none'}, this run has {self.cfg.matryoshka or 'none'}"
            )
        mine = {"d_in": self.d_in, "saes": list(self.saes), "multi_topk": self.cfg.multi_topk}
        theirs = {key: meta.get(key) for key in mine}
        if theirs != mine:
            raise ValueError(
                f"cannot resume from {folder}: it was trained with d_in={theirs['d_in']}, "
                f"SAEs {theirs['saes']}, multi_topk={theirs['multi_topk']}; this run has "
                f"d_in={self.d_in}, SAEs {mine['saes']}, multi_topk={self.cfg.multi_topk}"
            )
        try:
            for name, sae in self.saes.items():
                params = {p: tensors[f"sae/{name}/{p}"] for p in sae.state_dict()}
                sae.load_state_dict(params)
                sae.cfg.input_scale = float(meta["input_scale"][name])
                self.optimizers[name].load_state_dict(unpack(meta["optim"][name], tensors))
                self.since_fired[name] = tensors[f"since_fired/{name}"].to(self.device, torch.long)
            torch.set_rng_state(unpack(meta["rng"]["torch"], tensors))
            if self.device.type == "cuda" and "cuda" in meta["rng"]:
                torch.cuda.set_rng_state(unpack(meta["rng"]["cuda"], tensors), self.device)
            self.step, self.tokens = int(meta["step"]), int(meta["tokens"])
            self.metrics = {name: dict(meta.get("metrics", {}).get(name, {})) for name in self.saes}
        except (KeyError, TypeError, RuntimeError, ValueError) as err:
            raise ValueError(
                f"corrupt training state {folder}: {type(err).__name__}: {err}"
            ) from None
        for name, sae in self.saes.items():
            if not all(torch.isfinite(p).all() for p in sae.parameters()):
                raise ValueError(f"corrupt training state {folder}: {name} has NaN or Inf weights")
        if meta.get("source") is not None:
            if hasattr(source, "load_state_dict"):
                source.load_state_dict(unpack(meta["source"], tensors))
            else:
                warnings.warn(
                    "the training state holds a data position but this source has no "
                    "load_state_dict(): resuming from the start of the source",
                    stacklevel=3,
                )
        self.initialized = True
        return tensors.get("pending")

    # ------------------------------------------------------------------ summary
    def _summary(self, stopped: str) -> dict:
        saes = {}
        for name, sae in self.saes.items():
            folder = self.out_dir / name
            saes[name] = {
                **self.metrics.get(name, {}),
                "n_latents": sae.n_latents,
                "k": sae.k,
                "path": str(folder) if (folder / "sae.safetensors").exists() else None,
            }
        return {
            "steps": self.step,
            "tokens": self.tokens,
            "stopped": stopped,
            "out_dir": str(self.out_dir),
            "saes": saes,
        }


def _make_optimizer(kind: str, sae: TopKSAE, lr: float) -> torch.optim.Optimizer:
    if kind == "signum":
        return ScheduleFreeSignSGD(sae.parameters(), lr=lr)
    return _adam(sae, lr)


def _adam(sae: TopKSAE, lr: float) -> torch.optim.Adam:
    kwargs = dict(lr=lr, betas=ADAM_BETAS, eps=ADAM_EPS)
    try:  # the fused kernel is fastest (CPU and CUDA); fall back where it is unsupported
        return torch.optim.Adam(sae.parameters(), fused=True, **kwargs)
    except (RuntimeError, ValueError):
        return torch.optim.Adam(sae.parameters(), **kwargs)
