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
import math
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import Tensor

from sae.config import SAEConfig
from sae.geomedian import geometric_median
from sae.matryoshka import nested_forward
from sae.model import TopKSAE, atomic_write
from sae.optim import ScheduleFreeSignSGD, default_signum_lr
from sae.state import state_exists
from sae.train.baselines import after_step, baseline_step, make_sae
from sae.train.batcher import Batcher
from sae.train.checkpoints import STATE_DIR, CheckpointsMixin
from sae.train.config import TrainConfig
from sae.train.metrics_log import METRICS_FILE, MetricsLogMixin  # noqa: F401 - re-exported

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 6.25e-10  # paper App. A; the PyTorch default 1e-8 is large next to TopK-sparse grads


def sae_name(n_latents: int, k: int) -> str:
    return f"{n_latents}-k{k}"


def default_lr(n_latents: int) -> float:
    """Paper's learning-rate scaling with width: 2e-4 / sqrt(n / 2^14)."""
    return 2e-4 / math.sqrt(n_latents / 2**14)


class Trainer(MetricsLogMixin, CheckpointsMixin):
    """Trains `saes` ("<n>-k<k>" -> TopKSAE), one per (width, k) of the config; with
    `hookpoints`, one family per hook point ("<hookpoint>/<n>-k<k>" -> TopKSAE).

    Here: building the SAEs, the training loop, one step, the schedule and initialisation;
    metrics and the summary are in metrics_log.py, the state and checkpoints on disk in
    checkpoints.py, batches of batch_tokens in batcher.py."""

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
        pending = self._start_or_resume(source, resume)
        shape = (self.d_in,) if self.hookpoints is None else (len(self.hookpoints), self.d_in)
        batcher = Batcher(iter(source), self.cfg.batch_tokens, shape, self.device, pending)
        queue: deque[Tensor] = deque()  # batches taken for initialisation, trained on first
        stopped = "done"
        if not self.initialized and not self._initialize_from(batcher, queue):
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

    def _start_or_resume(self, source, resume: bool) -> Tensor | None:
        """A new run: empty metrics files. A resume: the saved state loaded, metrics
        logged after it dropped. Returns the tokens taken but not yet trained on."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if not resume:
            for path in self._metrics_paths().values():
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(path, lambda tmp: Path(tmp).write_text(""))
            return None
        if not state_exists(self.out_dir / STATE_DIR):
            raise ValueError(f"nothing to resume: {self.out_dir / STATE_DIR} does not exist")
        pending = self._load_state(source)
        self._trim_metrics()
        return pending

    def _initialize_from(self, batcher: Batcher, queue: deque[Tensor]) -> bool:
        """Take the first geomedian_tokens into `queue` (trained on first) and initialise
        from them. False when they are not finite."""
        target = min(self.cfg.geomedian_tokens, self.total_steps * self.cfg.batch_tokens)
        got = 0
        while got < target and (batch := batcher.next()) is not None:
            queue.append(batch)
            got += len(batch)
        if not queue:
            raise ValueError("the activation source yielded no data")
        return self._initialize(torch.cat(list(queue)))

    # ------------------------------------------------------------------ one step
    def _backward_and_step(self, x: Tensor) -> bool:
        """Forward + backward of every SAE on batch x (N, d), then one optimiser step each.

        Returns False, without stepping, if a loss or gradient is not finite. The host
        syncs once per step (that check), plus once per SAE for the dead-latent count
        when some latent can be dead. Data-parallel training overrides the _reduce_* hooks.
        """
        cfg = self.cfg
        x = x.to(self.device, non_blocking=True)
        inputs = self._depth_inputs(x)
        checks, fired = self._forward_backward(inputs)

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
        self._optimizer_steps(fired, n_tokens)
        return True

    def _forward_backward(self, inputs: list[Tensor]) -> tuple[list[Tensor], dict[str, Tensor]]:
        """Loss and gradients of every SAE on its depth's batch (N, d); each SAE's loss goes
        in the log window. Returns the losses (for the finiteness check) and, per SAE, how
        often each latent fired (n,)."""
        cfg = self.cfg
        can_be_dead = cfg.auxk_alpha > 0 and self.tokens > self.dead_after_tokens
        checks: list[Tensor] = []
        fired: dict[str, Tensor] = {}
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
        return checks, fired

    def _optimizer_steps(self, fired: dict[str, Tensor], n_tokens: int) -> None:
        """One optimiser step per SAE at the scheduled lr, then the dead-latent counters
        and the step and token counts."""
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

    def _depth_inputs(self, x: Tensor) -> list[Tensor]:
        """Batch (N, d) or (N, D, d) -> each depth's (N, d), contiguous for the matmuls."""
        if self.hookpoints is None:
            return [x]
        return [x[:, i].contiguous() for i in range(x.shape[1])]

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
